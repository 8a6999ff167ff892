//! `health`: the container's HEALTHCHECK, with no shell, curl or wget in the
//! image. Reads only the configuration file (no database, no directory):
//!
//! * with `serve.http_listen`: `GET /health` on that port over loopback;
//!   healthy when serve answers 200 (a directory host and the database
//!   reachable, or mailcow's provider switched off);
//! * otherwise (the sync container): `state_dir/sync-every.status`, written by
//!   `sync --every` after each run, must be fresh (at most twice the period
//!   plus five minutes old) and its run must have ended with exit 0 (not a
//!   refusal, 1, nor an outage of LDAP or the database, 111).
//!
//! Exit 0 healthy, 1 unhealthy (Docker's HEALTHCHECK meaning), with one line
//! saying why.

use crate::config;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The `health` command.
pub fn run(config_path: &Path) -> ExitCode {
    let (healthy, line) = match check(config_path) {
        Ok(line) => (true, line),
        Err(line) => (false, line),
    };
    println!("{}: {line}", if healthy { "healthy" } else { "unhealthy" });
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn check(config_path: &Path) -> Result<String, String> {
    let raw = config::load_raw(config_path).map_err(|e| e.to_string())?;
    let listen = raw
        .serve
        .http_listen
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    match listen {
        Some(a) => {
            let addr: SocketAddr = a
                .parse()
                .map_err(|_| format!("serve.http_listen = \"{a}\" is not IP:PORT"))?;
            probe_serve(loopback_for(addr))
        }
        None => {
            let dir = raw
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/run/mailcow-ldap-auth"));
            sync_status(&dir, crate::health::unix_now())
        }
    }
}

/// Where to reach a listener of this host (or container) from itself.
pub fn loopback_for(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        // [::] takes IPv4 too, and falls back to 0.0.0.0 without IPv6: 127.0.0.1 reaches both.
        IpAddr::V6(ip) if ip == Ipv6Addr::UNSPECIFIED => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

fn probe_serve(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("serve does not answer on {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let _ = s.set_write_timeout(Some(TIMEOUT));
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("serve on {addr}: {e}"))?;
    let mut reply = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    match status {
        "200" => Ok(format!("serve on {addr}: {body}")),
        "" => Err(format!("serve on {addr} gave no HTTP answer")),
        other => Err(format!("serve on {addr} answered {other}: {body}")),
    }
}

/// The sync container: what `sync --every` wrote after its last run.
fn sync_status(state_dir: &Path, now: u64) -> Result<String, String> {
    let path = state_dir.join(crate::schedule::STATUS_FILE);
    let v: serde_json::Value =
        crate::state_dir::read_small(state_dir, crate::schedule::STATUS_FILE, 64 * 1024)
            .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            format!(
                "{} missing or unreadable: is `sync --every` running (no serve.http_listen in the config)?",
                path.display()
            )
        })?;
    let (time, exit, every) = (
        v["time"].as_u64().unwrap_or(0),
        v["exit"].as_u64().unwrap_or(111),
        v["every"].as_u64().unwrap_or(60),
    );
    let age = now.saturating_sub(time);
    let limit = every.saturating_mul(2).saturating_add(300);
    if age > limit {
        return Err(format!(
            "the last sync run ended {age} s ago (runs every {every} s; more than {limit} s)"
        ));
    }
    if exit != 0 {
        return Err(format!(
            "the last sync run ({age} s ago) exited {exit}{}: see the container's log",
            if exit == 111 {
                " (LDAP or the database unreachable)"
            } else {
                ""
            }
        ));
    }
    Ok(format!("the last sync run ended {age} s ago, exit {exit}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets() {
        let p = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(loopback_for(p("0.0.0.0:9083")), p("127.0.0.1:9083"));
        assert_eq!(loopback_for(p("[::]:9083")), p("127.0.0.1:9083"));
        assert_eq!(loopback_for(p("10.0.0.5:1")), p("10.0.0.5:1"));
        assert_eq!(loopback_for(p("[::1]:2")), p("[::1]:2"));
    }

    #[test]
    fn sync_status_freshness_and_outcome() {
        let d = tempfile::TempDir::new().unwrap();
        assert!(sync_status(d.path(), 1000).is_err(), "no file yet");
        let write = |time: u64, exit: u64| {
            std::fs::write(
                d.path().join(crate::schedule::STATUS_FILE),
                serde_json::json!({"time": time, "exit": exit, "every": 60}).to_string(),
            )
            .unwrap()
        };
        write(1000, 0);
        assert!(sync_status(d.path(), 1100).is_ok());
        assert!(sync_status(d.path(), 1000 + 420).is_ok(), "2 x 60 + 300");
        assert!(sync_status(d.path(), 1000 + 421).is_err(), "stale");
        write(1000, 1);
        assert!(
            sync_status(d.path(), 1001).is_err(),
            "a refusal needs the admin"
        );
        write(1000, 111);
        assert!(sync_status(d.path(), 1001).is_err());
    }
}
