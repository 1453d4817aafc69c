//! Every GPS decoder fed a byte stream as TCP delivers it: in pieces split at arbitrary
//! points. The connection is modelled as `gps::server` runs it (protocol detection from the
//! first bytes, a read never past the frame limit, then decode until `Incomplete`). Properties:
//! no panic, every step consumes at least one byte and no more than it was given, and the
//! messages decoded (good or bad), their order, the bytes left over and the way the connection
//! ends are the same whatever the split (one documented exception: `H02_BINARY`).
//!
//! Input: byte 0 picks the protocol (0 or > 9: detected from the stream, as the server does;
//! 1-9: forced, to reach each decoder directly); byte 1 bit 0 picks small limits (to reach the
//! length checks); byte 2 is the number of piece lengths that follow (mod 16), each one byte
//! (length = byte + 1, cycled over the stream). The rest is the stream.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tallyd::gps::detect::{detect, Detect};
use tallyd::gps::fix::{Protocol, Step};
use tallyd::gps::server::{Decoder, Limits};

/// `gps::server`'s bytes asked per read.
const READ_CHUNK: usize = 4096;
/// H02's binary frames have no length field: a frame is 32 bytes, or 45 when the byte after
/// the first 32 does not start another frame (as Traccar decides). When a read ends exactly
/// after 32 bytes the decoder takes the short form (waiting for one more byte would hold a
/// device's last report until its next one, and past `gps.frame_timeout`), so a 45-byte frame
/// cut there decodes differently; the same holds for the 42-byte frame of a 15-digit id. Runs
/// where that happened are not compared.
const H02_BINARY: usize = 32;
/// The 42-byte H02 binary frame (15-digit id), ambiguous in the same way.
const H02_BINARY_LONG_ID: usize = 42;
/// H02 fills in the date from the clock; fixed so both runs agree.
const NOW_MS: i64 = 1_750_000_000_000;

/// `gps::server`'s limits with the two that matter here; the timeouts play no part.
fn limits(max_line: usize, max_frame: usize) -> Limits {
    let t = Duration::from_secs(60);
    Limits {
        nmea_require_checksum: max_line % 2 == 0,
        points_invalid_fixes: false,
        max_connections: 1,
        max_frame,
        max_line,
        handshake_timeout: t,
        frame_timeout: t,
        idle_timeout: t,
    }
}

/// One connection's state, as `gps::server::Connection` keeps it.
struct Conn<'a> {
    limits: &'a Limits,
    buf: Vec<u8>,
    decoder: Option<Decoder>,
    /// What happened, in order: each decoded step and, last, why the connection closed.
    events: Vec<String>,
    closed: bool,
    /// An H02 binary frame ended exactly at the end of the buffer: the one decision the
    /// protocol leaves to the split (see `H02_BINARY`).
    ambiguous: bool,
}

impl Conn<'_> {
    /// One read of up to `bytes.len()` bytes; returns how many were taken.
    fn read(&mut self, bytes: &[u8]) -> usize {
        let limit = self
            .decoder
            .as_ref()
            .map_or(self.limits.max_line, |d| d.limit(self.limits));
        let room = (limit + 1).saturating_sub(self.buf.len()).min(READ_CHUNK);
        if room == 0 {
            self.close("no room: buffer at the frame limit");
            return 0;
        }
        let n = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..n]);
        self.process();
        n
    }

    fn close(&mut self, why: &str) {
        self.events.push(format!("closed: {why}"));
        self.closed = true;
    }

    fn process(&mut self) {
        while !self.buf.is_empty() {
            let decoder = match &mut self.decoder {
                Some(d) => d,
                None => match detect(&self.buf) {
                    Detect::Found(p) => {
                        self.events.push(format!("detected {p:?}"));
                        self.decoder.insert(Decoder::new(p))
                    }
                    Detect::NeedMore if self.buf.len() <= self.limits.max_line => return,
                    d => return self.close(&format!("detect: {d:?}")),
                },
            };
            let h02 = matches!(decoder, Decoder::H02);
            let step = decoder.step(&self.buf, self.limits, NOW_MS);
            match &step {
                Step::Incomplete => return,
                Step::Skip(n) | Step::Frame { len: n, .. } => {
                    assert!(
                        *n >= 1,
                        "a step that consumes nothing loops forever: {step:?}"
                    );
                    assert!(*n <= self.buf.len(), "consumed past the buffer: {step:?}");
                    if h02
                        && self.buf[0] == b'$'
                        && (self.buf.len() == H02_BINARY || self.buf.len() == H02_BINARY_LONG_ID)
                    {
                        self.ambiguous = true;
                    }
                    self.buf.drain(..*n);
                    // What is observable: the messages (counted, delivered, answered), not
                    // how many bytes each step took nor the blank bytes skipped.
                    if let Step::Frame { msg, .. } = &step {
                        self.events.push(format!("{msg:?}"));
                    }
                }
                Step::Fatal(_) => return self.close(&format!("{step:?}")),
            }
        }
    }
}

/// The events and the bytes left in the buffer, or None when the run met the H02 ambiguity.
fn run(
    stream: &[u8],
    pieces: &[usize],
    limits: &Limits,
    forced: Option<Protocol>,
) -> Option<(Vec<String>, Vec<u8>)> {
    let mut c = Conn {
        limits,
        buf: Vec::new(),
        decoder: forced.map(Decoder::new),
        events: Vec::new(),
        closed: false,
        ambiguous: false,
    };
    let mut at = 0;
    let mut i = 0;
    while at < stream.len() && !c.closed {
        let piece = pieces
            .get(i % pieces.len().max(1))
            .copied()
            .unwrap_or(usize::MAX);
        let end = stream.len().min(at.saturating_add(piece));
        // A read may take less than the piece (the frame limit): the rest is read next.
        while at < end && !c.closed {
            at += c.read(&stream[at..end]);
        }
        i += 1;
    }
    // After a close the buffer is dropped: what was left in it is not observable.
    if c.closed {
        c.buf.clear();
    }
    (!c.ambiguous).then_some((c.events, c.buf))
}

fuzz_target!(|data: &[u8]| {
    let [mode, lim, n, rest @ ..] = data else {
        return;
    };
    let n = usize::from(*n % 16).min(rest.len());
    let (lens, stream) = rest.split_at(n);
    let pieces: Vec<usize> = lens.iter().map(|&b| usize::from(b) + 1).collect();
    let forced = match mode {
        1 => Some(Protocol::Nmea),
        2 => Some(Protocol::H02),
        3 => Some(Protocol::Gps103),
        4 => Some(Protocol::Gt06),
        5 => Some(Protocol::Teltonika),
        6 => Some(Protocol::Tk103),
        7 => Some(Protocol::Queclink),
        8 => Some(Protocol::Meitrack),
        9 => Some(Protocol::Watch),
        _ => None,
    };
    let limits = if lim & 1 != 0 {
        limits(64, 256)
    } else {
        // The defaults of gps.max_line_bytes and gps.max_frame_bytes.
        limits(1024, 16_384)
    };
    let Some(whole) = run(stream, &[], &limits, forced) else {
        return;
    };
    if let Some(split) = run(stream, &pieces, &limits, forced) {
        assert_eq!(
            whole, split,
            "the split {pieces:?} changed what was decoded"
        );
    }
    // One byte at a time, the worst TCP can do.
    if stream.len() <= 2048 {
        if let Some(bytewise) = run(stream, &[1], &limits, forced) {
            assert_eq!(
                whole, bytewise,
                "byte-at-a-time delivery changed what was decoded"
            );
        }
    }
});
