//! The strictness hyper does not have. hyper parses every request; this
//! looks at the same raw bytes as they are read and marks a connection
//! whose head has a form that RFC 9112 lets a server refuse and that a
//! request smuggler uses: a field name followed by a space (`Name : value`),
//! two Content-Length fields (hyper keeps one when they agree), a sign, a
//! list or anything but digits in Content-Length, control characters, an
//! obsolete line folding, a malformed request line. The request with that
//! head, and any after it on the connection, is answered 400.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Heads longer than this are hyper's to refuse (431).
const MAX_HEAD: usize = 8192;

/// How the body after a head is framed.
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    /// Content-Length (none: 0).
    Length(u64),
    /// Transfer-Encoding: serve refuses it (411), and stops following.
    Encoded,
}

/// Check one raw head (request line and fields, without the blank line).
pub fn check_head(head: &[u8]) -> Result<Body, ()> {
    let head = std::str::from_utf8(head).map_err(|_| ())?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target, version) = (
        first.next().unwrap_or(""),
        first.next().unwrap_or(""),
        first.next().unwrap_or(""),
    );
    let tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    if method.is_empty()
        || !method.bytes().all(tchar)
        || !target.starts_with('/')
        || !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        || first.next().is_some()
    {
        return Err(());
    }
    let mut length = None;
    let mut encoded = false;
    for l in lines {
        // RFC 9112 5: a field name is a token directly followed by the colon.
        let (k, v) = l.split_once(':').ok_or(())?;
        if k.is_empty() || !k.bytes().all(tchar) {
            return Err(());
        }
        let v = v.trim_matches([' ', '\t']);
        if v.bytes()
            .any(|c| (c.is_ascii_control() && c != b'\t') || c == 0x7f)
        {
            return Err(());
        }
        // One Content-Length, all digits (no sign, no list): RFC 9112 6.3.
        if k.eq_ignore_ascii_case("content-length") {
            if length.is_some()
                || v.is_empty()
                || v.len() > 19
                || !v.bytes().all(|c| c.is_ascii_digit())
            {
                return Err(());
            }
            length = Some(v.parse().map_err(|_| ())?);
        }
        encoded |= k.eq_ignore_ascii_case("transfer-encoding");
    }
    Ok(if encoded {
        Body::Encoded
    } else {
        Body::Length(length.unwrap_or(0))
    })
}

enum State {
    Head(Vec<u8>),
    Body(u64),
    /// Framing not followed any more (a refused head, chunked, too long).
    Off,
}

/// Follows the requests of one connection through its raw bytes.
pub struct HeadScan {
    state: State,
    heads: usize,
    bad_from: Arc<AtomicUsize>,
}

impl HeadScan {
    /// `bad_from` is set to the index of the first refused head.
    pub fn new(bad_from: Arc<AtomicUsize>) -> HeadScan {
        HeadScan {
            state: State::Head(Vec::new()),
            heads: 0,
            bad_from,
        }
    }

    /// Bytes just read from the client, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::Head(buf) => {
                    // Empty lines before a request line are ignored (RFC 9112 2.2).
                    if buf.is_empty() {
                        while let Some(rest) = bytes.strip_prefix(b"\r\n") {
                            bytes = rest;
                        }
                        if bytes.is_empty() {
                            return;
                        }
                    }
                    let from = buf.len().saturating_sub(3);
                    let take = bytes.len().min(MAX_HEAD + 4 - buf.len().min(MAX_HEAD + 4));
                    buf.extend_from_slice(&bytes[..take]);
                    let Some(end) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
                        if buf.len() >= MAX_HEAD + 4 {
                            self.state = State::Off;
                        }
                        return;
                    };
                    let end = from + end;
                    // What of this read lies after the head.
                    let used = take - (buf.len() - (end + 4));
                    bytes = &bytes[used..];
                    match check_head(&buf[..end]) {
                        Ok(body) => {
                            self.heads += 1;
                            self.state = match body {
                                Body::Length(0) => State::Head(Vec::new()),
                                Body::Length(n) => State::Body(n),
                                Body::Encoded => State::Off,
                            };
                        }
                        Err(()) => {
                            let _ = self.bad_from.compare_exchange(
                                usize::MAX,
                                self.heads,
                                Ordering::SeqCst,
                                Ordering::SeqCst,
                            );
                            self.state = State::Off;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert_eq!(
            check_head(b"POST /auth?x=1 HTTP/1.1\r\nContent-Length: 5\r\nX-Auth-Secret: s"),
            Ok(Body::Length(5))
        );
        assert_eq!(
            check_head(b"GET /health HTTP/1.0\r\nX-A:\t v \t"),
            Ok(Body::Length(0))
        );
        assert_eq!(
            check_head(b"POST /auth HTTP/1.1\r\nTransfer-Encoding: chunked"),
            Ok(Body::Encoded)
        );
        for bad in [
            &b"garbage"[..],
            b"GET / HTTP/1.1\r\nno-colon",
            b"POST /auth HTTP/1.1\r\nContent-Length : 2",
            b"POST /auth HTTP/1.1\r\nContent-Length: +2",
            b"POST /auth HTTP/1.1\r\nContent-Length: 2, 2",
            b"POST /auth HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2",
            b"POST /auth HTTP/1.1\r\nContent-Length:",
            b"POST /auth HTTP/1.1\r\n: x",
            b"POST /auth HTTP/1.1\r\nX-A: a\x01b",
            b"POST /auth HTTP/1.1\r\nX-A: a\r\n folded",
            b"POST /auth HTTP/1.1 extra",
            b"POST /auth HTTP/1.10",
        ] {
            assert_eq!(check_head(bad), Err(()), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn scan(chunks: &[&[u8]]) -> usize {
        let bad = Arc::new(AtomicUsize::new(usize::MAX));
        let mut s = HeadScan::new(bad.clone());
        for c in chunks {
            s.feed(c);
        }
        bad.load(Ordering::SeqCst)
    }

    #[test]
    fn follows_requests_across_reads_and_bodies() {
        let good = b"POST /auth HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";
        let bad = b"POST /auth HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(scan(&[good, good, b"\r\n", good]), usize::MAX);
        // One byte at a time, and a body that looks like a bad head.
        let body_like_head = b"POST /a HTTP/1.1\r\nContent-Length: 9\r\n\r\nX : y\r\n\r\n";
        let bytes: Vec<u8> = [&good[..], body_like_head, good].concat();
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(scan(&singles), usize::MAX);
        assert_eq!(scan(&[bad]), 0);
        assert_eq!(scan(&[good, good, bad, good]), 2);
        let joined = [&good[..], bad].concat();
        assert_eq!(scan(&[&joined]), 1);
    }
}
