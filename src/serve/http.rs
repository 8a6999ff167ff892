//! The HTTP/JSON front end, the body mailcow's Lua passdb already sends:
//! `POST /auth {"username","password","real_rip","service"}` -> 200 / 401 / 503,
//! `POST /lookup {"username"}` -> 200 / 404 / 503, `GET /health`.
//! One request per connection (`Connection: close`), bodies capped, no
//! password ever logged.

use super::Runtime;
use crate::auth::{self, Accepted, LogLine, Request};
use crate::outcome::{Failure, RequestKind};
use crate::secret::Secret;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Header carrying the shared secret, when `serve.http_secret_file` is set.
pub const SECRET_HEADER: &str = "x-auth-secret";
const MAX_HEAD: usize = 8192;

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Bytes of the body already read with the head (may hold the password).
    pub body_start: Zeroizing<Vec<u8>>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse the request head (up to the blank line). `Err` is the status to answer.
pub fn parse_head(buf: &[u8]) -> Result<Option<HttpRequest>, u16> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(431)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| 400u16)?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path, version) = (
        first.next().unwrap_or(""),
        first.next().unwrap_or(""),
        first.next().unwrap_or(""),
    );
    if method.is_empty() || !path.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(400);
    }
    if first.next().is_some() || version.len() != "HTTP/1.1".len() {
        return Err(400);
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for l in lines {
        // RFC 9112 5: a field name is a token, directly followed by the colon
        // (`Name : value` is refused, not trimmed); RFC 9110 5.6.2 tchar.
        let (k, v) = l.split_once(':').ok_or(400u16)?;
        let tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
        if k.is_empty() || !k.bytes().all(tchar) {
            return Err(400);
        }
        let (k, v) = (k.to_ascii_lowercase(), v.trim_matches([' ', '\t']));
        if v.bytes().any(|c| c.is_ascii_control() && c != b'\t') {
            return Err(400);
        }
        // One Content-Length, all digits (no sign, no list): RFC 9112 6.3.
        if k == "content-length"
            && (v.is_empty()
                || !v.bytes().all(|c| c.is_ascii_digit())
                || headers.iter().any(|(n, _)| n == "content-length"))
        {
            return Err(400);
        }
        headers.push((k, v.to_owned()));
    }
    Ok(Some(HttpRequest {
        method: method.to_owned(),
        path: path.split('?').next().unwrap_or(path).to_owned(),
        headers,
        body_start: Zeroizing::new(buf[end + 4..].to_vec()),
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn respond(stream: &mut TcpStream, status: u16, body: &Value) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body.as_bytes()));
    let _ = stream.flush();
}

/// After answering a request whose body was not read: close our side, then
/// read (and drop) what the client still sends for a moment, so the kernel
/// does not reset the connection before the client has read the answer.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    let mut total = 0usize;
    while let Ok(n) = stream.read(&mut sink) {
        total += n;
        if n == 0 || total > 1 << 20 {
            break;
        }
    }
}

/// Over capacity: a temporary failure, written by the acceptor.
pub fn busy(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    respond(
        &mut stream,
        503,
        &json!({"success": false, "error": "server busy, try again"}),
    );
}

/// Read the head and the body (bounded); `Err` is the status to answer.
fn read_request(
    stream: &mut TcpStream,
    max_body: usize,
) -> Result<(HttpRequest, Zeroizing<Vec<u8>>), u16> {
    // Buffers that may hold the password are zeroed on every path (Zeroizing
    // drops) and never reallocate while they do: the head buffer has room
    // for the largest head plus one read, the body buffer for the whole body.
    let mut chunk = Zeroizing::new([0u8; 2048]);
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_HEAD + chunk.len()));
    let req = loop {
        let n = stream.read(&mut chunk[..]).map_err(|_| 408u16)?;
        if n == 0 {
            return Err(400);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(r) = parse_head(&buf)? {
            break r;
        }
    };
    if req.header("transfer-encoding").is_some() {
        return Err(411);
    }
    let len: usize = match req.header("content-length") {
        None if req.method == "GET" => 0,
        None => return Err(411),
        Some(v) => v.parse().map_err(|_| 400u16)?,
    };
    if len > max_body {
        return Err(413);
    }
    // Dovecot 2.3's Lua HTTP client waits (2 s) for this before sending the body.
    if len > req.body_start.len()
        && req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| 408u16)?;
    }
    let mut body = Zeroizing::new(Vec::with_capacity(len.max(req.body_start.len())));
    body.extend_from_slice(&req.body_start);
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..want]).map_err(|_| 408u16)?;
        if n == 0 {
            return Err(400);
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok((req, body))
}

#[derive(Deserialize)]
struct AuthBody {
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    real_rip: Option<String>,
    #[serde(default)]
    service: Option<String>,
}

fn fields_json(acc: &Accepted) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in acc.fields.pairs() {
        m.insert(k.to_owned(), Value::String(v));
    }
    Value::Object(m)
}

/// Constant-time comparison, so the secret can't be guessed byte by byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serve one connection.
pub fn handle(rt: &Runtime, mut stream: TcpStream) {
    let peer = stream.peer_addr().map(|a| a.ip().to_string()).ok();
    let (req, body) = match read_request(&mut stream, rt.cfg.serve.max_body_bytes) {
        Ok(r) => r,
        Err(status) => {
            respond(
                &mut stream,
                status,
                &json!({"success": false, "error": reason(status)}),
            );
            linger(&mut stream);
            return;
        }
    };
    let (status, out) = route(rt, &req, &body, peer.as_deref());
    drop(body);
    respond(&mut stream, status, &out);
}

fn route(rt: &Runtime, req: &HttpRequest, body: &[u8], peer: Option<&str>) -> (u16, Value) {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/health") => health(rt),
        ("POST", "/auth") | ("POST", "/lookup") => {
            if let Some(secret) = &rt.cfg.serve.http_secret {
                match req.header(SECRET_HEADER) {
                    Some(given) if same_secret(given.as_bytes(), secret.expose().as_bytes()) => {}
                    Some(_) => {
                        return (
                            403,
                            json!({"success": false, "error": "wrong X-Auth-Secret"}),
                        )
                    }
                    None => {
                        return (
                            403,
                            json!({"success": false, "error": "X-Auth-Secret header required"}),
                        )
                    }
                }
            }
            let parsed: AuthBody = match serde_json::from_slice(body) {
                Ok(b) => b,
                Err(e) => {
                    return (
                        400,
                        json!({"success": false, "error": format!("malformed JSON: {e}")}),
                    )
                }
            };
            let kind = if req.path == "/auth" {
                RequestKind::Password
            } else {
                RequestKind::Lookup
            };
            decide(rt, parsed, kind, peer)
        }
        (_, "/health" | "/auth" | "/lookup") => (
            405,
            json!({"success": false, "error": "method not allowed"}),
        ),
        _ => (404, json!({"success": false, "error": "not found"})),
    }
}

fn decide(rt: &Runtime, body: AuthBody, kind: RequestKind, peer: Option<&str>) -> (u16, Value) {
    let started = Instant::now();
    let service = body.service.map(|s| s.to_ascii_lowercase());
    let remote_ip = body
        .real_rip
        .filter(|s| !s.is_empty())
        .or_else(|| peer.map(str::to_owned));
    let request = Request {
        login: body.username,
        password: (kind == RequestKind::Password).then(|| Secret::new(body.password)),
        kind,
        service: service.clone(),
        remote_ip: remote_ip.clone(),
        dry_run: false,
    };
    let d = rt.decide(&request);
    auth::log_decision(&LogLine {
        kind,
        login: &request.login,
        service: service.as_deref(),
        remote_ip: remote_ip.as_deref(),
        result: &d.result,
        host: d.host.as_deref(),
        started,
        via: Some("http"),
    });
    match d.result {
        Ok(acc) => (
            200,
            json!({"success": true, "user": acc.user, "fields": fields_json(&acc)}),
        ),
        Err(Failure::Temporary(why)) => (
            503,
            json!({"success": false, "error": format!("temporary failure: {why}")}),
        ),
        Err(Failure::Misuse(why)) => (503, json!({"success": false, "error": why})),
        Err(_) if kind == RequestKind::Lookup => (404, json!({"success": false})),
        // Another passdb may still accept it (auth::passed_on): say so, so
        // a chain hands it on; every other refusal is final.
        Err(f) if auth::passed_on(&rt.cfg, &f) => (
            401,
            json!({"success": false, "not_ours": true, "reason": f.to_string()}),
        ),
        Err(_) => (401, json!({"success": false})),
    }
}

/// Per-host directory health and database reachability (no credentials needed).
fn health(rt: &Runtime) -> (u16, Value) {
    if let Some(source) = &rt.provider_off {
        // Nothing of ours to probe: logins go on to mailcow's passdbs.
        return (
            200,
            json!({"ok": true, "identity_provider": source, "ldap": "not used: mailcow's Identity Provider is not LDAP"}),
        );
    }
    let now = crate::health::unix_now();
    let memory = rt.ldap.health();
    let hosts: Vec<Value> = rt
        .cfg
        .ldap
        .hosts
        .iter()
        .map(|h| {
            let reachable = std::net::ToSocketAddrs::to_socket_addrs(&(h.name.as_str(), h.port))
                .ok()
                .and_then(|mut a| a.next())
                .map(|a| TcpStream::connect_timeout(&a, rt.cfg.ldap.connect_timeout).is_ok())
                .unwrap_or(false);
            let failed = memory
                .is_marked(h, now, rt.cfg.ldap.host_retry)
                .map(|t| now.saturating_sub(t));
            json!({"host": h.label(), "reachable": reachable, "failed_seconds_ago": failed})
        })
        .collect();
    let any_ldap = hosts.iter().any(|h| h["reachable"] == Value::Bool(true));
    let db = rt.database_status();
    let db_ok = db.as_ref().is_none_or(|r| r.is_ok());
    let db_json = match db {
        None => Value::String("not configured".into()),
        Some(Ok(())) => Value::String("ok".into()),
        Some(Err(e)) => Value::String(e),
    };
    let ok = any_ldap && db_ok;
    (
        if ok { 200 } else { 503 },
        json!({"ok": ok, "ldap": hosts, "database": db_json, "idle_ldap_connections": rt.ldap.idle_count()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let r = parse_head(
            b"POST /auth?x=1 HTTP/1.1\r\nContent-Length: 5\r\nX-Auth-Secret: s\r\n\r\nabc",
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/auth"));
        assert_eq!(r.header("content-length"), Some("5"));
        assert_eq!(r.header("x-auth-secret"), Some("s"));
        assert_eq!(r.body_start.as_slice(), b"abc");
        assert_eq!(parse_head(b"POST /auth HTTP/1.1\r\nHost: x"), Ok(None));
        assert_eq!(parse_head(b"garbage\r\n\r\n"), Err(400));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nno-colon\r\n\r\n"), Err(400));
        assert_eq!(parse_head(&[b'a'; 9000]), Err(431));
        // Lenient forms refused (they were accepted): a space before the
        // colon, a signed or listed Content-Length, two of them, controls.
        for bad in [
            &b"POST /auth HTTP/1.1\r\nContent-Length : 2\r\n\r\n"[..],
            b"POST /auth HTTP/1.1\r\nContent-Length: +2\r\n\r\n",
            b"POST /auth HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n",
            b"POST /auth HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            b"POST /auth HTTP/1.1\r\nContent-Length:\r\n\r\n",
            b"POST /auth HTTP/1.1\r\n: x\r\n\r\n",
            b"POST /auth HTTP/1.1\r\nX-A: a\x01b\r\n\r\n",
            b"POST /auth HTTP/1.1 extra\r\n\r\n",
            b"POST /auth HTTP/1.10\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(bad),
                Err(400),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let tab = parse_head(b"GET /health HTTP/1.0\r\nX-A:\t v \t\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(tab.header("x-a"), Some("v"));
    }

    #[test]
    fn secrets_compare_fully() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
