//! Cyrus saslauthd's socket protocol (`saslauthd/ipc_unix.c`): one request per
//! connection, four fields (login, password, service, realm), each a 2-byte
//! big-endian length and the bytes; the reply is a 2-byte length and text
//! beginning `OK` or `NO`. A temporary failure closes the connection without a
//! reply, which Postfix turns into 454 (try later) instead of 535.

use super::metrics::{Front, Metrics};
use super::pool::{Pool, Refused};
use super::{Runtime, Shared};
use crate::auth::{self, LogLine, Request};
use crate::outcome::{Failure, RequestKind, Verdict};
use crate::secret::Secret;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use zeroize::Zeroizing;

/// saslauthd refuses longer fields.
pub const MAX_FIELD: usize = 256;

/// Why a request is refused before any decision.
#[derive(Debug, PartialEq, Eq)]
pub enum Bad {
    /// Answer `NO <reason>`.
    No(&'static str),
    /// The connection broke: nothing to answer.
    Gone,
}

/// The four fields of a request.
pub struct SaslRequest {
    pub login: String,
    pub password: Secret,
    pub service: String,
}

async fn read_field(r: &mut (impl AsyncRead + Unpin)) -> Result<Zeroizing<Vec<u8>>, Bad> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await.map_err(|_| Bad::Gone)?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_FIELD {
        return Err(Bad::No("field too long"));
    }
    let mut buf = Zeroizing::new(vec![0u8; len]);
    r.read_exact(&mut buf).await.map_err(|_| Bad::Gone)?;
    Ok(buf)
}

/// Read and check one request.
pub async fn read_request(r: &mut (impl AsyncRead + Unpin)) -> Result<SaslRequest, Bad> {
    let login = read_field(r).await?;
    let password = read_field(r).await?;
    let service = read_field(r).await?;
    let realm = read_field(r).await?;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| Bad::No("not UTF-8"));
    let (login, service, realm) = (text(&login)?, text(&service)?, text(&realm)?);
    if login.is_empty() || password.is_empty() {
        return Err(Bad::No("empty login or password"));
    }
    let password =
        Secret::new(String::from_utf8(password.to_vec()).map_err(|_| Bad::No("not UTF-8"))?);
    // The client split user@realm at the last '@': put it back together.
    let login = if !login.contains('@') && !realm.is_empty() {
        format!("{login}@{realm}")
    } else {
        login
    };
    Ok(SaslRequest {
        login,
        password,
        service,
    })
}

/// `len(2) + text`.
pub fn reply(text: &str) -> Vec<u8> {
    let t = &text.as_bytes()[..text.len().min(1024)];
    let mut out = (t.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(t);
    out
}

/// What every saslauthd connection shares.
pub struct Sasl {
    pub shared: Arc<Shared>,
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
}

/// Serve one connection: the request must arrive within
/// `serve.request_timeout_ms` (its first bytes within `serve.header_timeout_ms`);
/// then a decision thread of the saslauthd share decides; the answer is
/// written within `serve.request_timeout_ms`.
pub async fn connection(sasl: Arc<Sasl>, mut stream: UnixStream) {
    let (header, whole, wait) = {
        let rt = sasl.shared.runtime();
        let s = &rt.cfg.serve;
        (s.header_timeout, s.request_timeout, s.queue_timeout)
    };
    let accepted = tokio::time::Instant::now();
    let first = tokio::time::timeout(header, stream.readable()).await;
    if first.is_err() {
        sasl.metrics.refused(Front::Saslauthd, "deadline");
        return;
    }
    let req = match tokio::time::timeout_at(accepted + whole, read_request(&mut stream)).await {
        Err(_) => {
            sasl.metrics.refused(Front::Saslauthd, "deadline");
            return;
        }
        Ok(Ok(r)) => r,
        Ok(Err(Bad::No(why))) => {
            let _ =
                tokio::time::timeout(whole, stream.write_all(&reply(&format!("NO {why}")))).await;
            return;
        }
        Ok(Err(Bad::Gone)) => return,
    };
    let shared = sasl.shared.clone();
    let metrics = sasl.metrics.clone();
    let (out, waited) = sasl
        .pool
        .run(wait, move || decide(&shared.runtime(), &metrics, req))
        .await;
    sasl.metrics.queue_wait(Front::Saslauthd, waited);
    let answer = match out {
        Ok(a) => a,
        Err(Refused::Busy) => {
            sasl.metrics.refused(Front::Saslauthd, "capacity");
            crate::log::error(
                "serve: saslauthd request refused: all decision threads (serve.workers) stayed busy for serve.queue_timeout_ms",
            );
            None
        }
        Err(Refused::Failed) => {
            sasl.metrics.login(
                Front::Saslauthd,
                RequestKind::Password,
                None,
                Verdict::Temporary,
                None,
            );
            None
        }
    };
    // No answer: closed without a reply, the client reports a temporary failure.
    if let Some(answer) = answer {
        let _ = tokio::time::timeout(whole, stream.write_all(&answer)).await;
    }
}

/// On a decision thread: the reply, or `None` for a temporary failure.
fn decide(rt: &Runtime, metrics: &Metrics, req: SaslRequest) -> Option<Vec<u8>> {
    let started = Instant::now();
    super::test_panic(&req.login);
    let service = (!req.service.is_empty()).then(|| req.service.to_ascii_lowercase());
    let request = Request {
        login: req.login,
        password: Some(req.password),
        kind: RequestKind::Password,
        service: service.clone(),
        remote_ip: None,
        dry_run: false,
    };
    let d = rt.decide(&request);
    let verdict = auth::log_decision(&LogLine {
        kind: RequestKind::Password,
        login: &request.login,
        service: service.as_deref(),
        remote_ip: None,
        result: &d.result,
        host: d.host.as_deref(),
        started,
        via: Some("saslauthd"),
    });
    metrics.login(
        Front::Saslauthd,
        RequestKind::Password,
        service.as_deref(),
        verdict,
        Some(started.elapsed()),
    );
    match d.result {
        Ok(_) => Some(reply("OK")),
        Err(Failure::Temporary(_) | Failure::Misuse(_)) => None,
        Err(_) => Some(reply("NO authentication failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fields: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in fields {
            v.extend_from_slice(&(f.len() as u16).to_be_bytes());
            v.extend_from_slice(f);
        }
        v
    }

    fn read_request(r: &mut &[u8]) -> Result<SaslRequest, Bad> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(super::read_request(r))
    }

    #[test]
    fn requests() {
        let r = read_request(&mut frame(&[b"jo", b"pw", b"smtp", b"ex.org"]).as_slice()).unwrap();
        assert_eq!(
            (r.login.as_str(), r.password.expose(), r.service.as_str()),
            ("jo@ex.org", "pw", "smtp")
        );
        let r =
            read_request(&mut frame(&[b"jo@a.org", b"pw", b"smtp", b"b.org"]).as_slice()).unwrap();
        assert_eq!(r.login, "jo@a.org");
        let r = read_request(&mut frame(&[b"jo", b"pw", b"", b""]).as_slice()).unwrap();
        assert_eq!(r.login, "jo");
        assert_eq!(
            read_request(&mut frame(&[b"", b"pw", b"", b""]).as_slice()).err(),
            Some(Bad::No("empty login or password"))
        );
        assert_eq!(
            read_request(&mut frame(&[b"jo", b"", b"", b""]).as_slice()).err(),
            Some(Bad::No("empty login or password"))
        );
        let long = vec![b'a'; 257];
        assert_eq!(
            read_request(&mut frame(&[&long, b"pw", b"", b""]).as_slice()).err(),
            Some(Bad::No("field too long"))
        );
        assert_eq!(read_request(&mut &b"\x00\x05ab"[..]).err(), Some(Bad::Gone));
        assert_eq!(reply("OK"), b"\x00\x02OK");
    }
}
