//! The HTTP/JSON front end (hyper), the body mailcow's Lua passdb already sends:
//! `POST /auth {"username","password","real_rip","service"}` -> 200 / 401 / 503,
//! `POST /lookup {"username"}` -> 200 / 404 / 503, `GET /health`.
//!
//! Reading a request costs no decision thread: the head must arrive within
//! `serve.header_timeout_ms` (also the limit on an idle keep-alive
//! connection), the whole request within `serve.request_timeout_ms` of the
//! moment the connection started waiting for it. The shared secret is
//! checked from the head, before the body is read. Only a complete request
//! goes to the decision pool. No password is ever logged; a 503 says
//! "temporary failure" and the reason goes to the log.

use super::metrics::{Front, Metrics};
use super::net::Timed;
use super::pool::{Pool, Refused};
use super::strict::HeadScan;
use super::{Runtime, Shared};
use crate::auth::{self, Accepted, LogLine, Request};
use crate::outcome::{Failure, RequestKind, Verdict};
use crate::secret::Secret;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::watch;
use zeroize::Zeroizing;

/// Header carrying the shared secret, when `serve.http_secret_file` is set.
pub const SECRET_HEADER: &str = "x-auth-secret";
/// The largest request head (hyper's smallest buffer).
const MAX_HEAD: usize = 8192;
/// A refused body shorter than this is read and dropped before the answer,
/// so closing the connection does not reset it before the client reads.
const DRAIN_LIMIT: u64 = 64 * 1024;

pub type Answer = hyper::Response<Full<Bytes>>;

/// What every HTTP connection shares.
pub struct Http {
    pub shared: Arc<Shared>,
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
}

/// The JSON answer for `status`.
pub fn answer(status: u16, body: &Value) -> Answer {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: u16, text: &str) -> Answer {
    answer(status, &json!({"success": false, "error": text}))
}

fn temporary() -> Answer {
    error(503, "temporary failure")
}

/// Over capacity before any byte was read: written straight to the socket.
pub const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 45\r\nConnection: close\r\n\r\n{\"success\":false,\"error\":\"temporary failure\"}";

/// What hyper lets through but the old parser refused (RFC 9112 6.3, 5.5):
/// two Content-Length fields, a list or a sign in one, control characters.
/// `Err` is the status to answer.
pub fn check_head(headers: &HeaderMap) -> Result<Option<u64>, u16> {
    for v in headers.values() {
        if v.as_bytes()
            .iter()
            .any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f)
        {
            return Err(400);
        }
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        return Err(411);
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let Some(v) = lengths.next() else {
        return Ok(None);
    };
    if lengths.next().is_some() {
        return Err(400);
    }
    let v = v.as_bytes();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(400);
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or(400)
}

/// Constant-time comparison, so the secret can't be guessed byte by byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Ok(true)`: the right secret; `Ok(false)`: no secret configured; `Err`: refused.
fn secret_given(rt: &Runtime, headers: &HeaderMap) -> Result<bool, &'static str> {
    let Some(secret) = &rt.cfg.serve.http_secret else {
        return Ok(false);
    };
    match headers.get(SECRET_HEADER) {
        Some(given) if same_secret(given.as_bytes(), secret.expose().as_bytes()) => Ok(true),
        Some(_) => Err("wrong X-Auth-Secret"),
        None => Err("X-Auth-Secret header required"),
    }
}

/// Serve one connection until it closes, its deadlines pass, or serve stops.
pub async fn connection(
    http: Arc<Http>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let rt = http.shared.runtime();
    let limits = Limits {
        header: rt.cfg.serve.header_timeout,
        request: rt.cfg.serve.request_timeout,
    };
    drop(rt);
    let _ = stream.set_nodelay(true);
    // The index of the first request whose raw head is refused (see `strict`).
    let bad_from = Arc::new(AtomicUsize::new(usize::MAX));
    let io = hyper_util::rt::TokioIo::new(
        Timed::new(stream, limits.request).scanned(HeadScan::new(bad_from.clone())),
    );
    // When this connection started waiting for its next request, and how
    // many it has answered (a keep-alive connection closed when idle was
    // served; one that never sent a head in time was refused).
    let waiting = Arc::new(Mutex::new(Instant::now()));
    let answered = Arc::new(AtomicUsize::new(0));
    let svc = {
        let (http, answered) = (http.clone(), answered.clone());
        hyper::service::service_fn(move |req| {
            let (http, waiting, answered) = (http.clone(), waiting.clone(), answered.clone());
            let bad_from = bad_from.clone();
            let refused = answered.load(Ordering::Relaxed) >= bad_from.load(Ordering::SeqCst);
            async move {
                let since = *waiting.lock().unwrap_or_else(|p| p.into_inner());
                let r = if refused {
                    let mut r = error(400, "Bad Request");
                    r.headers_mut()
                        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                    r
                } else {
                    handle(&http, req, peer.ip(), since + limits.request).await
                };
                *waiting.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                answered.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Infallible>(r)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD)
        .max_headers(64);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = stop.wait_for(|s| *s) => None,
    };
    let r = match ended {
        Some(r) => r,
        None => {
            // Stopping: answer what is in flight, close when idle.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if r.is_err_and(|e| e.is_timeout()) && answered.load(Ordering::Relaxed) == 0 {
        http.metrics.refused(Front::Http, "deadline");
    }
}

#[derive(Clone, Copy)]
struct Limits {
    header: Duration,
    request: Duration,
}

async fn handle(
    http: &Http,
    req: hyper::Request<Incoming>,
    peer: IpAddr,
    deadline: Instant,
) -> Answer {
    let rt = http.shared.runtime();
    let kind = match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => {
            return match secret_given(&rt, req.headers()) {
                Ok(with) => health(&rt, http, with || rt.cfg.serve.http_secret.is_none()),
                // Without the secret: whether it is healthy, nothing more.
                Err(_) => health(&rt, http, false),
            };
        }
        (&Method::POST, "/auth") => RequestKind::Password,
        (&Method::POST, "/lookup") => RequestKind::Lookup,
        (_, "/health" | "/auth" | "/lookup") => return error(405, "method not allowed"),
        _ => return error(404, "not found"),
    };
    let len = match check_head(req.headers()) {
        Ok(Some(len)) => len,
        Ok(None) => return error(411, "Length Required"),
        Err(status) => return error(status, "Bad Request"),
    };
    // The secret from the head: a caller without it sends no body we read.
    if let Err(why) = secret_given(&rt, req.headers()) {
        return error(403, why);
    }
    let max = rt.cfg.serve.max_body_bytes;
    if len > max as u64 {
        if len <= DRAIN_LIMIT {
            let _ = read_body(req.into_body(), len as usize, deadline).await;
        }
        return error(413, "Payload Too Large");
    }
    let body = match read_body(req.into_body(), len as usize, deadline).await {
        Ok(b) => b,
        Err(Some(status)) => {
            if status == 408 {
                http.metrics.refused(Front::Http, "deadline");
            }
            return error(status, "Request Timeout");
        }
        Err(None) => return error(400, "Bad Request"),
    };
    let parsed: AuthBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(400, &format!("malformed JSON: {e}")),
    };
    drop(body);
    let shared = http.shared.clone();
    let metrics = http.metrics.clone();
    let wait = rt.cfg.serve.queue_timeout;
    drop(rt);
    let (out, waited) = http
        .pool
        .run(wait, move || {
            let rt = shared.runtime();
            decide(&rt, &metrics, parsed, kind, peer)
        })
        .await;
    http.metrics.queue_wait(Front::Http, waited);
    match out {
        Ok((status, body)) => answer(status, &body),
        Err(Refused::Busy) => {
            http.metrics.refused(Front::Http, "capacity");
            crate::log::error(&format!(
                "serve: http request from {peer} refused: all decision threads (serve.workers) stayed busy for serve.queue_timeout_ms"
            ));
            temporary()
        }
        Err(Refused::Failed) => {
            http.metrics
                .login(Front::Http, kind, None, Verdict::Temporary, None);
            temporary()
        }
    }
}

/// The body, exactly `len` bytes, by `deadline`, in a buffer zeroed on drop.
/// `Err(Some(408))`: too slow; `Err(None)`: broken or not `len` bytes.
async fn read_body(
    mut body: Incoming,
    len: usize,
    deadline: Instant,
) -> Result<Zeroizing<Vec<u8>>, Option<u16>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| None)?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > len {
                    return Err(None);
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline.into(), read).await {
        Err(_) => Err(Some(408)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) if out.len() == len => Ok(out),
        Ok(Ok(())) => Err(None),
    }
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

/// On a decision thread: decide, log, count, and shape the answer.
fn decide(
    rt: &Runtime,
    metrics: &Metrics,
    body: AuthBody,
    kind: RequestKind,
    peer: IpAddr,
) -> (u16, Value) {
    let started = Instant::now();
    super::test_panic(&body.username);
    let service = body.service.map(|s| s.to_ascii_lowercase());
    let remote_ip = body
        .real_rip
        .filter(|s| !s.is_empty())
        .or_else(|| Some(peer.to_string()));
    let request = Request {
        login: body.username,
        password: (kind == RequestKind::Password).then(|| Secret::new(body.password)),
        kind,
        service: service.clone(),
        remote_ip: remote_ip.clone(),
        dry_run: false,
    };
    let d = rt.decide(&request);
    let verdict = auth::log_decision(&LogLine {
        kind,
        login: &request.login,
        service: service.as_deref(),
        remote_ip: remote_ip.as_deref(),
        result: &d.result,
        host: d.host.as_deref(),
        started,
        via: Some("http"),
    });
    metrics.login(
        Front::Http,
        kind,
        service.as_deref(),
        verdict,
        Some(started.elapsed()),
    );
    match d.result {
        Ok(acc) => (
            200,
            json!({"success": true, "user": acc.user, "fields": fields_json(&acc)}),
        ),
        // The reason is in the log line above, not in the answer.
        Err(Failure::Temporary(_) | Failure::Misuse(_)) => {
            (503, json!({"success": false, "error": "temporary failure"}))
        }
        Err(_) if kind == RequestKind::Lookup => (404, json!({"success": false})),
        // The password was right, the login is refused with a reason the
        // user is told (auth::decide left only those with a text): the Lua
        // passdb answers Dovecot with `nologin` and `reason`. A 401 with
        // "success": false, so a Lua script that predates it refuses plainly.
        Err(Failure::NoLogin(r, _)) => (
            401,
            json!({"success": false, "nologin": true, "reason": rt.cfg.messages.text(r)}),
        ),
        // Another passdb may still accept it (auth::passed_on): say so, so
        // a chain hands it on; every other refusal is final.
        Err(f) if auth::passed_on(&rt.cfg, &f) => (
            401,
            json!({"success": false, "not_ours": true, "reason": f.to_string()}),
        ),
        Err(_) => (401, json!({"success": false})),
    }
}

/// Health from what serve already knows (no connection is opened): the
/// failed-host memory of the directory pool and the database pool's last
/// connect. Details only with the secret (or when none is configured).
fn health(rt: &Runtime, http: &Http, details: bool) -> Answer {
    if let Some(source) = &rt.provider_off {
        // Nothing of ours to probe: logins go on to mailcow's passdbs.
        let body = if details {
            json!({"ok": true, "identity_provider": source, "ldap": "not used: mailcow's Identity Provider is not LDAP"})
        } else {
            json!({"ok": true})
        };
        return answer(200, &body);
    }
    let now = crate::health::unix_now();
    let memory = rt.ldap.health();
    let hosts: Vec<Value> = rt
        .cfg
        .ldap
        .hosts
        .iter()
        .map(|h| {
            let failed = memory
                .is_marked(h, now, rt.cfg.ldap.host_retry)
                .map(|t| now.saturating_sub(t));
            json!({"host": h.label(), "reachable": failed.is_none(), "failed_seconds_ago": failed})
        })
        .collect();
    let any_ldap = hosts.iter().any(|h| h["reachable"] == Value::Bool(true));
    let db = rt.database_state();
    let ok = any_ldap && db != "failing";
    let status = if ok { 200 } else { 503 };
    if !details {
        return answer(status, &json!({"ok": ok}));
    }
    answer(
        status,
        &json!({
            "ok": ok,
            "ldap": hosts,
            "database": db,
            "idle_ldap_connections": rt.ldap.idle_count(),
            "database_connections": rt.db_open(),
            "decisions_busy": http.pool.busy(),
            "decision_threads": http.pool.size(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in lines {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strict_content_length_and_values() {
        assert_eq!(check_head(&head(&[("content-length", b"5")])), Ok(Some(5)));
        assert_eq!(check_head(&head(&[])), Ok(None));
        for bad in [
            &b"+2"[..],
            b"2, 2",
            b"-1",
            b" 2",
            b"0x2",
            b"99999999999999999999",
        ] {
            assert_eq!(
                check_head(&head(&[("content-length", bad)])),
                Err(400),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            check_head(&head(&[("content-length", b"2"), ("content-length", b"2")])),
            Err(400)
        );
        // Controls cannot even be held in a HeaderValue (the suite sends
        // them to hyper: 400).
        assert!(HeaderValue::from_bytes(b"a\x01b").is_err());
        assert_eq!(check_head(&head(&[("x-a", b"a\tb")])), Ok(None));
        assert_eq!(
            check_head(&head(&[("transfer-encoding", b"chunked")])),
            Err(411)
        );
    }

    #[test]
    fn busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert_eq!(
            serde_json::from_str::<Value>(body).unwrap()["error"],
            "temporary failure"
        );
    }

    #[test]
    fn secrets_compare_fully() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
