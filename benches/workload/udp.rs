//! The UDP load generator of the load and soak benches: `sendmmsg` from several sockets,
//! paced against the clock, counting the counter increments the kernel took.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Datagrams handed to one `sendmmsg` call.
const SEND_BATCH: usize = 64;
/// Sender sockets: distinct source ports, so SO_REUSEPORT spreads them over tallyd's sockets
/// as it would spread many client processes.
const SENDERS: usize = 8;

pub struct Generator {
    socks: Vec<UdpSocket>,
    dgrams: Vec<Vec<u8>>,
    incr: Vec<u64>,
    per: usize,
    next: usize,
    rr: usize,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub datagrams: u64,
    pub lines: u64,
    pub increments: u64,
    pub secs: f64,
    pub errors: u64,
}

impl Generator {
    pub fn new(target: SocketAddr, dgrams: Vec<Vec<u8>>, incr: Vec<u64>, per: usize) -> Generator {
        let socks = (0..SENDERS)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
                s.connect(target).expect("connect sender");
                s
            })
            .collect();
        Generator {
            socks,
            dgrams,
            incr,
            per,
            next: 0,
            rr: 0,
        }
    }

    /// Sends up to `n` datagrams (at most SEND_BATCH) with one sendmmsg call; returns how many
    /// the kernel took and their counter increments.
    pub fn send_batch(&mut self, n: usize) -> io::Result<(usize, u64)> {
        let n = n.min(SEND_BATCH);
        // SAFETY: all-zero iovec and mmsghdr are valid empty values (plain C structs).
        let mut iov: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
        for k in 0..n {
            let d = &self.dgrams[(self.next + k) % self.dgrams.len()];
            // The kernel only reads from iov_base for a send; the cast to *mut is what the C
            // struct demands, nothing writes through it.
            iov[k] = libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            };
            msgs[k].msg_hdr.msg_iov = &mut iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
        }
        let fd = self.socks[self.rr % self.socks.len()].as_raw_fd();
        self.rr += 1;
        // SAFETY: `msgs[..n]` are initialised headers pointing at `iov[..n]`, which point at
        // datagrams owned by `self.dgrams`; all outlive the call. The socket is connected, so
        // no address is passed.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = r as usize;
        let incr = (0..r)
            .map(|k| self.incr[(self.next + k) % self.incr.len()])
            .sum();
        self.next = (self.next + r) % self.dgrams.len();
        Ok((r, incr))
    }

    /// Sends at `rate` lines per second for `dur`, paced against the clock.
    pub fn run(&mut self, rate: f64, dur: Duration) -> Sent {
        let dgram_rate = rate / self.per as f64;
        let start = Instant::now();
        let mut out = Sent::default();
        loop {
            let el = start.elapsed();
            if el >= dur {
                break;
            }
            let due = (el.as_secs_f64() * dgram_rate) as u64;
            if out.datagrams >= due {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            match self.send_batch((due - out.datagrams) as usize) {
                Ok((n, incr)) => {
                    out.datagrams += n as u64;
                    out.increments += incr;
                }
                Err(_) => out.errors += 1,
            }
        }
        out.secs = start.elapsed().as_secs_f64();
        out.lines = out.datagrams * self.per as u64;
        out
    }
}
