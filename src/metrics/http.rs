//! A minimal HTTP/1.1 server for `GET /metrics`: one request per connection, a deadline on
//! reading each request and a cap on concurrent connections, so a slow client cannot wedge it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Metrics, CONTENT_TYPE};

/// Connections served at once; more are answered 503 and closed.
const MAX_CONNECTIONS: usize = 8;
/// Time a client has to send its whole request head.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Time a client has to take each chunk of the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head accepted (request line plus headers).
const MAX_HEAD: usize = 8 * 1024;
/// After answering, how long to wait for the client to close (see [`linger`]).
const LINGER: Duration = Duration::from_millis(500);

/// Accept connections forever, each on its own short-lived thread.
pub(super) fn accept_loop(listener: &TcpListener, metrics: &Arc<Metrics>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
                    refuse(stream);
                    continue;
                }
                let slot = Slot::take(&active);
                let metrics = Arc::clone(metrics);
                let spawned = thread::Builder::new()
                    .name("metrics-conn".to_string())
                    .spawn(move || {
                        let _slot = slot;
                        handle(stream, &metrics);
                    });
                // On failure the closure, and with it the slot and the stream, is dropped.
                if let Err(e) = spawned {
                    tracing::warn!("metrics: cannot start a connection thread: {e}");
                }
            }
            Err(e) => {
                tracing::debug!("metrics: accept: {e}");
                // Out of fds or memory: back off instead of spinning on the same error.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) {
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// One of [`MAX_CONNECTIONS`], given back when the connection's thread ends (even by panic).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Slot {
        active.fetch_add(1, Ordering::AcqRel);
        Slot(Arc::clone(active))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn refuse(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&response(
        503,
        "Service Unavailable",
        "text/plain; charset=utf-8",
        "too many connections\n",
        "",
        true,
    ));
}

fn handle(mut stream: TcpStream, metrics: &Metrics) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let answer = match read_head(&mut stream) {
        Ok(head) => route(&head, metrics),
        Err(HeadError::TooLarge) => plain(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
        ),
        Err(HeadError::Malformed) => plain(400, "Bad Request", "malformed request\n"),
        // Timed out, reset or closed: there is nobody to answer.
        Err(HeadError::Io(e)) => {
            tracing::debug!("metrics: reading a request: {e}");
            return;
        }
    };
    if let Err(e) = stream.write_all(&answer).and_then(|()| stream.flush()) {
        tracing::debug!("metrics: writing a response: {e}");
        return;
    }
    linger(&mut stream);
}

/// Close gracefully: send FIN, then read until the client closes (briefly), so that
/// unread request bytes do not turn our close into a reset that loses the response.
fn linger(stream: &mut TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 1024];
    let mut drained = 0usize;
    while drained < 64 * 1024 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

#[derive(Debug)]
enum HeadError {
    TooLarge,
    Malformed,
    Io(io::Error),
}

/// The request line's method and target, once the whole head has arrived.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    target: String,
}

fn read_head(stream: &mut TcpStream) -> Result<Head, HeadError> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            return parse_head(buf.get(..end).unwrap_or_default());
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Io(io::ErrorKind::TimedOut.into()));
        }
        // Per read, the time left of the whole deadline: a client trickling one byte at a
        // time still runs out of time.
        stream.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => {
                return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(0) => return Err(HeadError::Malformed),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// Where the head ends (the blank line), accepting bare `\n` line ends too.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_head(head: &[u8]) -> Result<Head, HeadError> {
    let text = std::str::from_utf8(head).map_err(|_| HeadError::Malformed)?;
    let line = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version), None)
            if !method.is_empty() && target.starts_with('/') && version.starts_with("HTTP/1.") =>
        {
            Ok(Head {
                method: method.to_string(),
                target: target.to_string(),
            })
        }
        _ => Err(HeadError::Malformed),
    }
}

fn route(head: &Head, metrics: &Metrics) -> Vec<u8> {
    let path = head.target.split('?').next().unwrap_or_default();
    let (code, reason, content_type, body) = match path {
        "/metrics" => (200, "OK", CONTENT_TYPE, metrics.render_endpoint()),
        "/healthz" | "/readyz" => {
            let health = if path == "/healthz" {
                metrics.liveness()
            } else {
                metrics.readiness()
            };
            let (code, reason) = if health.ok {
                (200, "OK")
            } else {
                (503, "Service Unavailable")
            };
            (code, reason, "text/plain; charset=utf-8", health.detail)
        }
        _ => {
            return plain(
                404,
                "Not Found",
                "not found; metrics are at /metrics, health at /healthz and /readyz\n",
            )
        }
    };
    match head.method.as_str() {
        "GET" => response(code, reason, content_type, &body, "", true),
        "HEAD" => response(code, reason, content_type, &body, "", false),
        _ => response(
            405,
            "Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n",
            "Allow: GET, HEAD\r\n",
            true,
        ),
    }
}

fn plain(code: u16, reason: &str, body: &str) -> Vec<u8> {
    response(code, reason, "text/plain; charset=utf-8", body, "", true)
}

fn response(
    code: u16,
    reason: &str,
    content_type: &str,
    body: &str,
    extra_headers: &str,
    with_body: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let ok = |s: &str| parse_head(s.as_bytes()).expect(s);
        assert_eq!(
            ok("GET /metrics HTTP/1.1\r\nHost: x"),
            Head {
                method: "GET".into(),
                target: "/metrics".into()
            }
        );
        assert_eq!(ok("HEAD /metrics?x=1 HTTP/1.0").target, "/metrics?x=1");
        for bad in [
            "",
            "GET",
            "GET /metrics",
            "GET metrics HTTP/1.1",
            "GET /m HTTP/2",
            "GET  /m HTTP/1.1",
            "\u{ff}",
        ] {
            assert!(
                matches!(parse_head(bad.as_bytes()), Err(HeadError::Malformed)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_head(b"GET /\xff HTTP/1.1"),
            Err(HeadError::Malformed)
        ));
    }

    #[test]
    fn head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(20));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn routes() {
        let m = Metrics::new();
        let head = |method: &str, target: &str| Head {
            method: method.into(),
            target: target.into(),
        };
        let status = |r: Vec<u8>| {
            String::from_utf8_lossy(&r)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(
            status(route(&head("GET", "/metrics"), &m)),
            "HTTP/1.1 200 OK"
        );
        assert_eq!(
            status(route(&head("GET", "/"), &m)),
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            status(route(&head("GET", "/metricsx"), &m)),
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            status(route(&head("POST", "/metrics"), &m)),
            "HTTP/1.1 405 Method Not Allowed"
        );
        let head_only = String::from_utf8_lossy(&route(&head("HEAD", "/metrics"), &m)).to_string();
        assert!(head_only.ends_with("\r\n\r\n"), "{head_only}");
        assert!(!head_only.contains("Content-Length: 0\r\n"), "{head_only}");
    }
}
