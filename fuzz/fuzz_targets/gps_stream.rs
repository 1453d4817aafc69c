//! Every GPS decoder fed a byte stream as TCP delivers it: in pieces split at arbitrary
//! points. The connection is modelled as `gps::server` runs it (protocol detection from the
//! first bytes, a read never past the frame limit, then decode until `Incomplete`). Properties:
//! no panic, every step consumes at least one byte and no more than it was given, and the
//! frames decoded, their order and the way the connection ends are the same whatever the split.
//!
//! Input: byte 0 picks the protocol (0 or > 5: detected from the stream, as the server does;
//! 1-5: forced, to reach each decoder directly); byte 1 bit 0 picks small limits (to reach the
//! length checks); byte 2 is the number of piece lengths that follow (mod 16), each one byte
//! (length = byte + 1, cycled over the stream). The rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tallyd::gps::detect::{detect, Detect};
use tallyd::gps::fix::{Protocol, Step};
use tallyd::gps::nmea::Nmea;
use tallyd::gps::teltonika::Teltonika;
use tallyd::gps::{gt06, h02, tk103};

/// `gps::server`'s bytes asked per read.
const READ_CHUNK: usize = 4096;
/// H02 fills in the date from the clock; fixed so both runs agree.
const NOW_MS: i64 = 1_750_000_000_000;

enum Decoder {
    Nmea(Nmea),
    H02,
    Tk103,
    Gt06,
    Teltonika(Teltonika),
}

impl Decoder {
    fn new(p: Protocol) -> Decoder {
        match p {
            Protocol::Nmea => Decoder::Nmea(Nmea::default()),
            Protocol::H02 => Decoder::H02,
            Protocol::Tk103 => Decoder::Tk103,
            Protocol::Gt06 => Decoder::Gt06,
            Protocol::Teltonika => Decoder::Teltonika(Teltonika::default()),
        }
    }

    fn step(&mut self, buf: &[u8], l: &Limits) -> Step {
        match self {
            Decoder::Nmea(n) => n.decode(buf, l.max_line),
            Decoder::H02 => h02::decode(buf, l.max_line, NOW_MS),
            Decoder::Tk103 => tk103::decode(buf, l.max_line),
            Decoder::Gt06 => gt06::decode(buf, l.max_frame),
            Decoder::Teltonika(t) => t.decode(buf, l.max_frame),
        }
    }

    fn limit(&self, l: &Limits) -> usize {
        match self {
            Decoder::Gt06 | Decoder::Teltonika(_) => l.max_frame,
            _ => l.max_line,
        }
    }
}

struct Limits {
    max_line: usize,
    max_frame: usize,
}

/// One connection's state, as `gps::server::Connection` keeps it.
struct Conn<'a> {
    limits: &'a Limits,
    buf: Vec<u8>,
    decoder: Option<Decoder>,
    /// What happened, in order: each decoded step and, last, why the connection closed.
    events: Vec<String>,
    closed: bool,
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
            let step = decoder.step(&self.buf, self.limits);
            match &step {
                Step::Incomplete => return,
                Step::Skip(n) | Step::Frame { len: n, .. } => {
                    assert!(
                        *n >= 1,
                        "a step that consumes nothing loops forever: {step:?}"
                    );
                    assert!(*n <= self.buf.len(), "consumed past the buffer: {step:?}");
                    self.buf.drain(..*n);
                    self.events.push(format!("{step:?}"));
                }
                Step::Fatal(_) => return self.close(&format!("{step:?}")),
            }
        }
    }
}

fn run(
    stream: &[u8],
    pieces: &[usize],
    limits: &Limits,
    forced: Option<Protocol>,
) -> (Vec<String>, Vec<u8>) {
    let mut c = Conn {
        limits,
        buf: Vec::new(),
        decoder: forced.map(Decoder::new),
        events: Vec::new(),
        closed: false,
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
    (c.events, c.buf)
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
        3 => Some(Protocol::Tk103),
        4 => Some(Protocol::Gt06),
        5 => Some(Protocol::Teltonika),
        _ => None,
    };
    let limits = if lim & 1 != 0 {
        Limits {
            max_line: 64,
            max_frame: 256,
        }
    } else {
        // The defaults of gps.max_line_bytes and gps.max_frame_bytes.
        Limits {
            max_line: 1024,
            max_frame: 16_384,
        }
    };
    let whole = run(stream, &[], &limits, forced);
    let split = run(stream, &pieces, &limits, forced);
    assert_eq!(
        whole, split,
        "the split {pieces:?} changed what was decoded"
    );
    // One byte at a time, the worst TCP can do.
    if stream.len() <= 2048 {
        let bytewise = run(stream, &[1], &limits, forced);
        assert_eq!(
            whole, bytewise,
            "byte-at-a-time delivery changed what was decoded"
        );
    }
});
