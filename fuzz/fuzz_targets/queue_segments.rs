//! The durable queue's reader fed damaged files. Payloads are written by `Queue::push` (the
//! real writer), the files are then damaged as a crash, a bad disk or a hand edit would (bytes
//! changed, cut short, bytes appended, replaced whole, stray files added), and the queue is
//! opened again and drained with `Queue::load` as the sender does. Properties: no panic; every
//! damaged file is either refused as `Corrupt` (counted in `tallyd_forwarder_corrupt_files`,
//! moved aside as `.corrupt`, out of the index) or returns exactly what was pushed, never
//! anything else; an intact file always loads; the drain ends.

#![no_main]

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tallyd::queue::store::Limits;
use tallyd::queue::{Meta, Queue, QueueError};

#[derive(Arbitrary, Debug)]
struct Item {
    id: String,
    endpoint: String,
    content_type: String,
    content_encoding: String,
    created_ms: u64,
    attempts: u32,
    status: Option<u16>,
    response: Option<String>,
    payload: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    /// XORs the byte at `at` (modulo the length) with `with`.
    Flip { file: u8, at: u16, with: u8 },
    /// Cuts the file to `len` bytes (modulo its length).
    Truncate { file: u8, len: u16 },
    /// Appends bytes.
    Append { file: u8, bytes: Vec<u8> },
    /// Copies `len` bytes from `from` over `to` (a torn or shifted write).
    Shift {
        file: u8,
        from: u16,
        to: u16,
        len: u8,
    },
    /// Replaces the file's content.
    Replace { file: u8, bytes: Vec<u8> },
    /// Adds a file named `seq` (hex) with this content.
    Stray { seq: u16, bytes: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    items: Vec<Item>,
    damage: Vec<Damage>,
}

fn file(dir: &Path, seq: u64) -> std::path::PathBuf {
    dir.join(format!("{seq:016x}.tq"))
}

fuzz_target!(|input: Input| {
    let base = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("temp dir");
    let limits = Limits {
        max_bytes: 1 << 30,
        dlq_max_bytes: 1 << 30,
    };
    let pending = base.path().join("q").join("pending");
    // (seq, what load returned when intact, the intact bytes)
    let mut written = Vec::new();
    {
        let q = Queue::open(base.path(), "q", limits).expect("open");
        // A new queue numbers its payloads from 1.
        for (seq, it) in (1..).zip(input.items.iter().take(8)) {
            let meta = Meta {
                id: it.id.clone(),
                endpoint: it.endpoint.clone(),
                content_type: it.content_type.clone(),
                content_encoding: it.content_encoding.clone(),
                created_ms: it.created_ms,
                attempts: it.attempts,
                status: it.status,
                response: it.response.clone(),
            };
            q.push(meta, &it.payload).expect("push");
            let loaded = q.load(seq).expect("an intact file loads");
            assert_eq!(loaded.1, it.payload);
            let bytes = fs::read(file(&pending, seq)).expect("read back");
            written.push((seq, loaded, bytes));
        }
    }
    for d in input.damage.iter().take(16) {
        let pick = |f: &u8| written.get(usize::from(*f) % written.len().max(1));
        match d {
            Damage::Stray { seq, bytes } => {
                // Above the pushed sequence numbers, so that it never replaces one.
                let _ = fs::write(file(&pending, 1000 + u64::from(*seq)), bytes);
            }
            Damage::Replace { file: f, bytes } => {
                if let Some((seq, ..)) = pick(f) {
                    let _ = fs::write(file(&pending, *seq), bytes);
                }
            }
            Damage::Flip { file: f, at, with } => {
                if let Some((seq, ..)) = pick(f) {
                    let path = file(&pending, *seq);
                    let mut b = fs::read(&path).unwrap_or_default();
                    if !b.is_empty() {
                        let i = usize::from(*at) % b.len();
                        b[i] ^= with;
                        let _ = fs::write(&path, b);
                    }
                }
            }
            Damage::Truncate { file: f, len } => {
                if let Some((seq, ..)) = pick(f) {
                    let path = file(&pending, *seq);
                    let mut b = fs::read(&path).unwrap_or_default();
                    b.truncate(usize::from(*len) % (b.len() + 1));
                    let _ = fs::write(&path, b);
                }
            }
            Damage::Append { file: f, bytes } => {
                if let Some((seq, ..)) = pick(f) {
                    let path = file(&pending, *seq);
                    let mut b = fs::read(&path).unwrap_or_default();
                    b.extend_from_slice(bytes);
                    let _ = fs::write(&path, b);
                }
            }
            Damage::Shift {
                file: f,
                from,
                to,
                len,
            } => {
                if let Some((seq, ..)) = pick(f) {
                    let path = file(&pending, *seq);
                    let mut b = fs::read(&path).unwrap_or_default();
                    if !b.is_empty() {
                        let from = usize::from(*from) % b.len();
                        let to = usize::from(*to) % b.len();
                        let n = usize::from(*len).min(b.len() - from).min(b.len() - to);
                        b.copy_within(from..from + n, to);
                        let _ = fs::write(&path, b);
                    }
                }
            }
        }
    }
    let q = Queue::open(base.path(), "q", limits).expect("reopen");
    let mut corrupt = 0u64;
    let mut loads = 0;
    while let Some(head) = q.head() {
        loads += 1;
        assert!(loads <= 64, "the drain does not end");
        let now = fs::read(file(&pending, head.seq)).ok();
        match q.load(head.seq) {
            Ok((meta, payload)) => {
                if let Some((_, (m, p), intact)) = written.iter().find(|w| w.0 == head.seq) {
                    assert!(
                        *m == meta && *p == payload,
                        "a damaged file of seq {} was returned as valid: {meta:?}",
                        head.seq
                    );
                    let _ = intact;
                }
                q.ack(head.seq);
            }
            Err(QueueError::Corrupt { .. }) => {
                corrupt += 1;
                if let Some((_, _, intact)) = written.iter().find(|w| w.0 == head.seq) {
                    assert!(
                        now.as_deref() != Some(intact.as_slice()),
                        "an intact file was refused"
                    );
                }
                assert!(
                    !file(&pending, head.seq).exists(),
                    "a corrupt file left in place"
                );
                assert!(
                    q.head().map(|h| h.seq) != Some(head.seq),
                    "a corrupt file still queued"
                );
            }
            Err(e) => panic!("load of a regular file failed: {e}"),
        }
    }
    assert_eq!(q.stats.corrupt.load(Relaxed), corrupt);
});
