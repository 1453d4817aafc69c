//! The client commands of the binary: `tallyd send` (StatsD lines over UDP, TCP or a Unix
//! datagram socket) and `tallyd health` (a blocking HTTP/1.0 GET of `/health/ready` over a
//! plain `TcpStream`, so that a container image needs no curl).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tallyd::config::Config;

/// The address to reach a listener bound to `listen` at: an unspecified address (every
/// interface) is reached on loopback.
fn reachable(key: &str, listen: &str) -> Result<SocketAddr, String> {
    if listen.is_empty() {
        return Err(format!(
            "{key} is empty (that listener is off); give --addr"
        ));
    }
    let mut a: SocketAddr = listen
        .parse()
        .map_err(|e| format!("{key} = {listen:?} is not an address: {e}"))?;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(a)
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("--addr {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {addr:?} resolves to no address"))
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(1)
}

/// `tallyd send`: the lines joined by newlines, as one datagram (UDP, Unix) or one write
/// (TCP, newline-terminated).
pub fn send(
    cfg: &Config,
    lines: &[String],
    tcp: bool,
    unix: Option<&Path>,
    addr: Option<&str>,
) -> ExitCode {
    let payload = lines.join("\n");
    let result = if let Some(path) = unix {
        std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.send_to(payload.as_bytes(), path))
            .map(|_| format!("unix:{}", path.display()))
            .map_err(|e| format!("cannot send to {}: {e}", path.display()))
    } else if tcp {
        let to = match addr.map_or_else(
            || reachable("statsd.tcp_listen", &cfg.statsd.tcp_listen),
            resolve,
        ) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .and_then(|mut s| {
                s.write_all(payload.as_bytes())?;
                s.write_all(b"\n")?;
                s.flush()
            })
            .map(|()| format!("tcp:{to}"))
            .map_err(|e| format!("cannot send to {to} over TCP: {e}"))
    } else {
        let to = match addr.map_or_else(
            || reachable("statsd.udp_listen", &cfg.statsd.udp_listen),
            resolve,
        ) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        let local: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .expect("a literal address");
        UdpSocket::bind(local)
            .and_then(|s| s.send_to(payload.as_bytes(), to))
            .map(|_| format!("udp:{to}"))
            .map_err(|e| format!("cannot send to {to} over UDP: {e}"))
    };
    match result {
        Ok(to) => {
            println!(
                "sent {} line(s), {} bytes to {to}",
                lines.len(),
                payload.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// An `http://host[:port][/path]` URL, split.
fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url:?}: only http:// URLs are supported (tallyd health speaks plain HTTP/1.0)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            let port = p
                .parse()
                .map_err(|_| format!("{url:?}: the port {p:?} is not a number"))?;
            (h, port)
        }
        _ => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// The default readiness URL: `/health/ready` on `http.listen`.
fn default_url(cfg: &Config, path: &str) -> Result<String, String> {
    if !cfg.http.tls_cert_file.is_empty() {
        return Err("http.listen serves TLS; give --url of a plain-HTTP listener".into());
    }
    let a = reachable("http.listen", &cfg.http.listen)?;
    Ok(format!("http://{a}{path}"))
}

/// GETs `url` with HTTP/1.0 and returns the status code and body.
fn get(url: &str, token: &str, timeout: Duration) -> Result<(u16, String), String> {
    let (host, port, path) = split_url(url)?;
    let deadline = Instant::now() + timeout;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .collect();
    let mut last = format!("{host}: no address");
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut s = match TcpStream::connect_timeout(&a, left) {
            Ok(s) => s,
            Err(e) => {
                last = format!("cannot connect to {a}: {e}");
                continue;
            }
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let _ = s.set_read_timeout(Some(left));
        let _ = s.set_write_timeout(Some(left));
        let auth = if token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {token}\r\n")
        };
        let req = format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n{auth}\r\n");
        s.write_all(req.as_bytes())
            .map_err(|e| format!("cannot send to {a}: {e}"))?;
        // Bounded: a health answer is small.
        let mut buf = Vec::new();
        s.take(64 * 1024)
            .read_to_end(&mut buf)
            .map_err(|e| format!("no answer from {a}: {e}"))?;
        let text = String::from_utf8_lossy(&buf);
        let code = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("{a} did not answer HTTP"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.trim().to_string())
            .unwrap_or_default();
        return Ok((code, body));
    }
    Err(last)
}

/// `tallyd health`: exit 0 iff the URL answers 200.
pub fn health(cfg: &Config, url: Option<&str>, live: bool, timeout: Duration) -> ExitCode {
    let path = if live {
        "/health/live"
    } else {
        "/health/ready"
    };
    let url = match url.map_or_else(|| default_url(cfg, path), |u| Ok(u.to_string())) {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    match get(&url, &cfg.http.admin_token, timeout) {
        Ok((200, body)) => {
            println!("{url}: 200 {body}");
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            eprintln!("{url}: {code} {body}");
            ExitCode::from(1)
        }
        Err(e) => fail(format!("{url}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:9090/health/ready"),
            Ok(("127.0.0.1".into(), 9090, "/health/ready".into()))
        );
        assert_eq!(
            split_url("http://[::1]:9/x"),
            Ok(("[::1]".into(), 9, "/x".into()))
        );
        assert_eq!(split_url("http://h"), Ok(("h".into(), 80, "/".into())));
        assert!(split_url("https://h/").is_err());
        assert!(split_url("http://h:x/").is_err());
    }

    #[test]
    fn every_address_is_reached_on_loopback() {
        assert_eq!(
            reachable("k", "0.0.0.0:8125"),
            Ok("127.0.0.1:8125".parse().expect("addr"))
        );
        assert_eq!(
            reachable("k", "[::]:1"),
            Ok("[::1]:1".parse().expect("addr"))
        );
        assert!(reachable("k", "").is_err());
    }
}
