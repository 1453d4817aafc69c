//! The `.tq` file format and the atomic write of one file into a queue directory.
//!
//! Every `.tq` file is `"TQ01"`, header length (u32 LE), payload length (u32 LE), CRC-32 of
//! header and payload (u32 LE), the header (JSON [`Meta`]), the payload. A file is written to
//! `tmp/`, fsynced, renamed into its directory (`pending/` or `dlq/`) and the directory
//! fsynced, so a file there is always complete.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::store::{Meta, QueueError};

const MAGIC: &[u8; 4] = b"TQ01";
const PREFIX: usize = 16;

/// Maps an I/O error on `path` to a [`QueueError`] naming it.
pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file name of sequence number `seq`.
pub(super) fn file_name(seq: u64) -> String {
    format!("{seq:016x}.tq")
}

/// Fsyncs a directory, so a rename into it survives a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Encodes a queue file.
pub fn encode(meta: &Meta, payload: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(meta).unwrap_or_default();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(payload);
    let mut out = Vec::with_capacity(PREFIX + header.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    out
}

/// Decodes a queue file; `Err` names what is wrong.
pub fn decode(data: &[u8]) -> Result<(Meta, Vec<u8>), &'static str> {
    if data.len() < PREFIX || &data[..4] != MAGIC {
        return Err("bad magic");
    }
    let word =
        |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize;
    let (hlen, plen, crc) = (word(4), word(8), word(12) as u32);
    if PREFIX + hlen + plen != data.len() {
        return Err("length mismatch");
    }
    let header = &data[PREFIX..PREFIX + hlen];
    let payload = &data[PREFIX + hlen..];
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(payload);
    if h.finalize() != crc {
        return Err("checksum mismatch");
    }
    let meta: Meta = serde_json::from_slice(header).map_err(|_| "bad header")?;
    Ok((meta, payload.to_vec()))
}

/// Writes `data` as file `seq` of `dest_dir`: into `tmp_dir` first, fsynced, renamed, and
/// `dest_dir` fsynced.
///
/// # Errors
/// Any step failed (a full disk, a directory that is gone or not a directory). Nothing is left
/// behind then: the temporary file is removed, and so is the renamed file when only the
/// directory fsync failed, because the caller counts the payload as not written.
pub(super) fn write_atomically(
    tmp_dir: &Path,
    dest_dir: &Path,
    seq: u64,
    data: &[u8],
) -> Result<(), QueueError> {
    let tmp = tmp_dir.join(file_name(seq));
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(data)?;
        f.sync_all()
    });
    if let Err(source) = written {
        // Also after a failed create: it may have made the file before failing.
        let _ = fs::remove_file(&tmp);
        return Err(QueueError::Io { path: tmp, source });
    }
    let dest = dest_dir.join(file_name(seq));
    if let Err(source) = fs::rename(&tmp, &dest) {
        let _ = fs::remove_file(&tmp);
        return Err(QueueError::Io { path: dest, source });
    }
    sync_dir(dest_dir).inspect_err(|_| {
        let _ = fs::remove_file(&dest);
    })
}
