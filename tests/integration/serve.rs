//! `serve` over HTTP/JSON and the saslauthd socket, against real slapd and
//! MariaDB: answers, outages and recovery, limits, load, reload and shutdown.

use crate::provision::Env as DbEnv;
use crate::support::serve::{raw_http, Serve};
use crate::support::slapd::{BASE, READER_DN, READER_PW};
use crate::support::{write_config, Slapd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;

fn ldap_config(dir: &Path, slapd: &Slapd, serve_extra: &str) -> (PathBuf, u16, PathBuf) {
    let (section, port, socket) = Serve::section(dir, serve_extra);
    let text = format!(
        "state_dir = \"{}\"\nlog_target = \"stderr\"\n{}\n[dovecot]\nuid = \"5000\"\ngid = \"5000\"\n{section}",
        dir.display(),
        slapd.ldap_section()
    );
    (write_config(dir, "serve.toml", &text), port, socket)
}

#[test]
fn http_answers_and_outage_recovery() {
    let dir = TempDir::new().unwrap();
    let mut slapd = Slapd::start(dir.path());
    let (cfg, port, socket) = ldap_config(dir.path(), &slapd, "");
    let serve = Serve::start(&cfg, port, socket);

    let r = serve.auth("JDoe@example.org", "secret1", "imap");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["success"], true);
    assert_eq!(r.json["user"], "jdoe@example.org");
    assert_eq!(r.json["fields"]["home"], "/var/vmail/example.org/jdoe");
    assert_eq!(r.json["fields"]["uid"], "5000");
    let r = serve.auth("jdoe@example.org", "Wr0ng-pw-1", "imap");
    assert_eq!(
        (r.status, &r.json["success"]),
        (401, &serde_json::Value::Bool(false)),
        "{r:?}"
    );
    assert_eq!(serve.auth("nobody@example.org", "x", "imap").status, 401);
    assert_eq!(
        serve.auth("jdoe@example.org", "", "imap").status,
        401,
        "empty password"
    );
    assert_eq!(serve.auth("*", "secret1", "imap").status, 401, "wildcard");

    let r = serve.http("POST", "/lookup", &[], r#"{"username":"jdoe@example.org"}"#);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["user"], "jdoe@example.org");
    assert_eq!(
        serve
            .http(
                "POST",
                "/lookup",
                &[],
                r#"{"username":"nobody@example.org"}"#
            )
            .status,
        404
    );

    // Malformed and oversize bodies, wrong methods and paths.
    assert_eq!(serve.http("POST", "/auth", &[], "{not json").status, 400);
    assert_eq!(
        serve
            .http("POST", "/auth", &[], r#"{"password":"x"}"#)
            .status,
        400
    );
    assert_eq!(
        serve
            .http(
                "POST",
                "/auth",
                &[],
                &format!("{{\"username\":\"{}\"}}", "a".repeat(9000))
            )
            .status,
        413
    );
    assert_eq!(serve.http("GET", "/auth", &[], "").status, 405);
    assert_eq!(serve.http("GET", "/nope", &[], "").status, 404);

    let h = serve.http("GET", "/health", &[], "");
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!(h.json["ldap"][0]["reachable"], true);
    assert_eq!(h.json["database"], "not configured");

    // The directory goes away: temporary failure (503), never 401.
    slapd.stop();
    let r = serve.auth("jdoe@example.org", "secret1", "imap");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.json["error"].as_str().unwrap().contains("temporary"),
        "{r:?}"
    );
    assert_eq!(
        serve
            .http("POST", "/lookup", &[], r#"{"username":"jdoe@example.org"}"#)
            .status,
        503
    );
    let h = serve.http("GET", "/health", &[], "");
    assert_eq!(
        (h.status, &h.json["ldap"][0]["reachable"]),
        (503, &serde_json::Value::Bool(false)),
        "{h:?}"
    );
    // ... and comes back: no restart needed.
    slapd.run();
    let r = serve.auth("jdoe@example.org", "secret1", "imap");
    assert_eq!(r.status, 200, "{r:?}");

    let log = serve.log_text();
    assert!(log.contains("via=http"), "{log}");
    assert!(
        !log.contains("secret1") && !log.contains("Wr0ng-pw-1"),
        "a password reached the log: {log}"
    );
}

#[test]
fn shared_secret_is_required_when_configured() {
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start(dir.path());
    let secret = dir.path().join("http-secret");
    std::fs::write(&secret, "s3cr3t-token\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (cfg, port, socket) = ldap_config(
        dir.path(),
        &slapd,
        &format!("http_secret_file = \"{}\"", secret.display()),
    );
    let serve = Serve::start(&cfg, port, socket);
    let body = r#"{"username":"jdoe@example.org","password":"secret1"}"#;
    assert_eq!(
        serve.http("POST", "/auth", &[], body).status,
        403,
        "a missing secret is not a wrong password"
    );
    assert_eq!(
        serve
            .http("POST", "/auth", &[("X-Auth-Secret", "guess")], body)
            .status,
        403
    );
    assert_eq!(
        serve
            .http("POST", "/auth", &[("X-Auth-Secret", "s3cr3t-token")], body)
            .status,
        200
    );
    // Health needs no credentials.
    assert_eq!(serve.http("GET", "/health", &[], "").status, 200);
}

#[test]
fn saslauthd_socket_answers_ok_no_or_nothing() {
    let dir = TempDir::new().unwrap();
    let mut slapd = Slapd::start(dir.path());
    let (cfg, port, socket) = ldap_config(dir.path(), &slapd, "");
    let serve = Serve::start(&cfg, port, socket);
    assert_eq!(
        serve
            .sasl("jdoe@example.org", "secret1", "smtp", "")
            .as_deref(),
        Some("OK")
    );
    // user + realm are put back together.
    assert_eq!(
        serve
            .sasl("jdoe", "secret1", "smtp", "example.org")
            .as_deref(),
        Some("OK")
    );
    assert!(serve
        .sasl("jdoe@example.org", "nope", "smtp", "")
        .unwrap()
        .starts_with("NO"));
    assert!(serve.sasl("", "x", "smtp", "").unwrap().starts_with("NO"));
    assert!(serve
        .sasl("jdoe@example.org", "", "smtp", "")
        .unwrap()
        .starts_with("NO"));
    assert!(serve
        .sasl(&"a".repeat(300), "x", "smtp", "")
        .unwrap()
        .starts_with("NO"));
    // The real reference client agrees.
    let out = std::process::Command::new("testsaslauthd")
        .args([
            "-u",
            "jdoe@example.org",
            "-p",
            "secret1",
            "-s",
            "smtp",
            "-f",
        ])
        .arg(&serve.socket)
        .output()
        .expect("testsaslauthd (package sasl2-bin)");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0: OK"),
        "{out:?}"
    );
    let out = std::process::Command::new("testsaslauthd")
        .args(["-u", "jdoe@example.org", "-p", "bad", "-s", "smtp", "-f"])
        .arg(&serve.socket)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0: NO"),
        "{out:?}"
    );
    // Directory down: no reply at all (Postfix then says 454, not 535).
    slapd.stop();
    assert_eq!(serve.sasl("jdoe@example.org", "secret1", "smtp", ""), None);
}

#[test]
fn provisioning_and_database_outage_over_http() {
    let e = DbEnv::new();
    let (section, port, socket) = Serve::section(e.path(), "");
    let base = std::fs::read_to_string(e.config()).unwrap();
    let cfg = write_config(e.path(), "serve-db.toml", &format!("{base}\n{section}"));
    let serve = Serve::start(&cfg, port, socket);
    let r = serve.auth("jdoe@example.org", "secret1", "imap");
    assert_eq!(r.status, 200, "{r:?}");
    // The Default template's quota 0 is unlimited, as in mailcow: no quota rule.
    assert!(r.json["fields"].get("quota_rule").is_none(), "{r:?}");
    assert_eq!(e.count("mailbox"), 1);
    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "pop3").status,
        200
    );
    e.db.sql("UPDATE mailbox SET attributes = JSON_SET(attributes, '$.pop3_access', '0')");
    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "pop3").status,
        401
    );
    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "imap").status,
        200
    );
    let h = serve.http("GET", "/health", &[], "");
    assert_eq!(
        (h.status, &h.json["database"]),
        (200, &serde_json::Value::String("ok".into())),
        "{h:?}"
    );
}

fn count(pid: u32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{what}"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// `clients` threads, each sending logins back to back for `secs`; returns (ok, errors).
fn load_round(port: u16, clients: usize, secs: u64) -> (usize, Vec<String>) {
    let end = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            std::thread::spawn(move || {
                let (mut ok, mut errors) = (0usize, Vec::new());
                // Mixed answers: right and wrong passwords.
                let pw = if i % 5 == 0 { "bad" } else { "secret1" };
                let want = if i % 5 == 0 { 401 } else { 200 };
                while Instant::now() < end {
                    let body = format!(r#"{{"username":"jdoe@example.org","password":"{pw}"}}"#);
                    let r = raw_http(port, "POST", "/auth", &[], &body);
                    if r.status == want {
                        ok += 1;
                    } else {
                        errors.push(format!("client {i}: {} {}", r.status, r.json));
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    let mut total = (0, Vec::new());
    for h in handles {
        let (ok, errors) = h.join().unwrap();
        total.0 += ok;
        total.1.extend(errors);
    }
    total
}

#[test]
fn load_leaves_no_leaks() {
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start(dir.path());
    let (cfg, port, socket) = ldap_config(dir.path(), &slapd, "queue_timeout_ms = 20000");
    let serve = Serve::start(&cfg, port, socket);
    let pid = serve.pid();
    // Warm up, then measure.
    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "imap").status,
        200
    );
    let (fds0, threads0) = (count(pid, "fd"), count(pid, "task"));
    let (ok1, errors1) = load_round(port, 200, 10);
    assert!(
        errors1.is_empty(),
        "{} errors, first: {:?}",
        errors1.len(),
        errors1.first()
    );
    let rss1 = rss_kb(pid);
    std::thread::sleep(Duration::from_millis(200));
    let (fds1, threads1) = (count(pid, "fd"), count(pid, "task"));
    let (ok2, errors2) = load_round(port, 200, 10);
    assert!(
        errors2.is_empty(),
        "{} errors, first: {:?}",
        errors2.len(),
        errors2.first()
    );
    let rss2 = rss_kb(pid);
    std::thread::sleep(Duration::from_millis(200));
    let (fds2, threads2) = (count(pid, "fd"), count(pid, "task"));
    assert!(
        ok1 > 200 && ok2 > 200,
        "throughput too low to mean anything: {ok1} {ok2}"
    );
    // The same threads throughout; descriptors: only the warm LDAP pools (8
    // search and 8 bind connections, each a socket and its I/O driver's few
    // descriptors) are added, and a second round adds nothing.
    assert_eq!(
        (threads1, threads2),
        (threads0, threads0),
        "threads before/after load"
    );
    assert!(
        fds1 <= fds0 + (8 + 8) * 5,
        "file descriptors grew from {fds0} to {fds1}"
    );
    assert!(
        fds2 <= fds1,
        "file descriptors grew across the second round: {fds1} -> {fds2}"
    );
    // Memory flat across the second round (allow 20 % for allocator noise).
    assert!(
        rss2 <= rss1 + rss1 / 5,
        "RSS grew from {rss1} kB to {rss2} kB"
    );
    eprintln!("load: round 1 {ok1} logins, round 2 {ok2}; fds {fds0}->{fds1}->{fds2}; threads {threads0}; RSS {rss1}->{rss2} kB");
}

#[test]
fn reload_and_graceful_shutdown() {
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start(dir.path());
    let (cfg, port, socket) = ldap_config(dir.path(), &slapd, "");
    let mut serve = Serve::start(&cfg, port, socket.clone());
    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "imap").json["fields"]["uid"],
        "5000"
    );
    let original = std::fs::read_to_string(&cfg).unwrap();
    // A good new config is taken on SIGHUP.
    write_config(
        dir.path(),
        "serve.toml",
        &original.replace("uid = \"5000\"", "uid = \"6000\""),
    );
    let before = serve.log_text().matches("configuration reloaded").count();
    serve.signal("HUP");
    wait_until(
        || serve.log_text().matches("configuration reloaded").count() > before,
        "reload",
    );
    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "imap").json["fields"]["uid"],
        "6000"
    );
    // A bad one is reported and the old one kept.
    write_config(
        dir.path(),
        "serve.toml",
        &format!("{original}\nbogus = 1\n"),
    );
    serve.signal("HUP");
    wait_until(
        || serve.log_text().contains("reload failed"),
        "reload failure",
    );
    assert!(serve.log_text().contains("bogus"), "{}", serve.log_text());
    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "imap").json["fields"]["uid"],
        "6000"
    );
    // SIGTERM with requests in flight: they are answered, then exit 0.
    let inflight: Vec<_> = (0..30)
        .map(|_| {
            std::thread::spawn(move || {
                // A connection refused after the listener closed panics in raw_http: count it as 0.
                std::panic::catch_unwind(|| {
                    raw_http(
                        port,
                        "POST",
                        "/auth",
                        &[],
                        r#"{"username":"jdoe@example.org","password":"secret1"}"#,
                    )
                    .status
                })
                .unwrap_or(0)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(5));
    let status = serve.stop().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let codes: Vec<u16> = inflight.into_iter().map(|h| h.join().unwrap()).collect();
    // A request sent after the listener closed may be refused (0); one that was accepted gets its answer.
    assert!(codes.iter().all(|&c| c == 200 || c == 0), "{codes:?}");
    assert!(
        codes.contains(&200),
        "some requests were in flight: {codes:?}"
    );
    assert!(!socket.exists(), "the socket is removed on exit");
}

fn wait_until(cond: impl Fn() -> bool, what: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

#[allow(dead_code)]
fn unused() -> (&'static str, &'static str, &'static str) {
    (BASE, READER_DN, READER_PW)
}
