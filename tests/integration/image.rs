//! The runtime image (`packaging/Dockerfile`), built here with no registry
//! access by `packaging/build-image.sh` with buildah (vfs storage in a private
//! folder, `--isolation chroot`), and run with `buildah run --isolation
//! chroot` (the host's network, the image's user and filesystem): serve and
//! `sync --every` inside it against this suite's slapd and MariaDB, the
//! configuration mounted as a folder, names resolved by the static binary,
//! `health` as the HEALTHCHECK runs it, and SIGTERM to the process inside.
//!
//! Needs the static release binary: `packaging/build-release.sh` (tests/run.sh
//! builds it before the tests; this test refuses a binary older than the sources).

use crate::provision::DEFAULT_TEMPLATE;
use crate::support::mariadb::{Db, PASSWORD as DB_PASSWORD, USER as DB_USER};
use crate::support::serve::raw_http;
use crate::support::slapd::{BASE, READER_DN, READER_PW};
use crate::support::{free_port, require, Slapd};
use crate::sync::directory;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tempfile::TempDir;

const IMAGE: &str = "localhost/mailcow-ldap-auth:test";
const IMAGE_UID: u32 = 10001;
/// Users in the directory the sync imports.
const USERS: usize = 300;
/// Generous bounds, for a loaded 2-core machine.
const START: Duration = Duration::from_secs(30);
const PROMPT_EXIT: Duration = Duration::from_secs(10);

/// The static binary `packaging/build-release.sh` made, if it is newer than every source file.
fn static_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = std::fs::read_dir(root.join("target"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("release").join("mailcow-ldap-auth"))
        .find(|p| {
            p.parent().unwrap().parent().unwrap().to_string_lossy().contains("-linux-") && p.exists()
        })
        .unwrap_or_else(|| {
            panic!("no static release binary under target/<triple>/release: run packaging/build-release.sh (tests/run.sh does)")
        });
    let built = std::fs::metadata(&found).unwrap().modified().unwrap();
    let mut newest = (SystemTime::UNIX_EPOCH, PathBuf::new());
    let mut todo = vec![root.join("src"), root.join("Cargo.lock")];
    while let Some(p) = todo.pop() {
        let m = std::fs::metadata(&p).unwrap();
        if m.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else if m.modified().unwrap() > newest.0 {
            newest = (m.modified().unwrap(), p);
        }
    }
    assert!(
        built >= newest.0,
        "{} is older than {}: run packaging/build-release.sh again",
        found.display(),
        newest.1.display()
    );
    found
}

/// buildah with its storage in `dir` (vfs: no overlay mounts needed).
struct Buildah {
    global: Vec<String>,
    _dir: TempDir,
}

impl Buildah {
    fn new() -> Buildah {
        require("buildah", "buildah");
        let dir = TempDir::new().unwrap();
        let global = vec![
            "--root".to_owned(),
            dir.path().join("storage").display().to_string(),
            "--runroot".to_owned(),
            dir.path().join("run").display().to_string(),
            "--storage-driver".to_owned(),
            "vfs".to_owned(),
        ];
        Buildah { global, _dir: dir }
    }

    fn engine(&self) -> String {
        format!("buildah {}", self.global.join(" "))
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.args(&self.global).stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "buildah {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `buildah run` of the binary in container `ctr` with the config folder
    /// mounted and `config` (a file in it) as the configuration.
    fn run(&self, ctr: &str, conf_dir: &Path, config: &str, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["run", "--isolation", "chroot", "--volume"])
            .arg(format!("{}:/etc/mailcow-ldap-auth:ro", conf_dir.display()))
            .args([
                "--env",
                &format!("MAILCOW_LDAP_AUTH_CONFIG=/etc/mailcow-ldap-auth/{config}"),
            ])
            .args([ctr, "--", "/usr/bin/mailcow-ldap-auth"])
            .args(args);
        c
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A process started with `buildah run`, its output in a file.
struct InImage {
    child: Option<Child>,
    log: PathBuf,
}

impl InImage {
    fn start(mut c: Command, log: PathBuf) -> InImage {
        let f = std::fs::File::create(&log).unwrap();
        let child = c
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("buildah run");
        InImage {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&mut self, needle: &str, limit: Duration) {
        let end = Instant::now() + limit;
        while !self.log().contains(needle) {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("exited ({st}) before {needle:?}:\n{}", self.log());
            }
            assert!(
                Instant::now() < end,
                "{needle:?} not within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The binary's own pid: buildah's descendant running /usr/bin/mailcow-ldap-auth.
    fn inner_pid(&self) -> u32 {
        let top = self.child.as_ref().unwrap().id();
        // pid -> parent pid, from /proc/<pid>/stat (the field after the ")" of the name).
        let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let rest = &stat[stat.rfind(')')? + 1..];
                let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
                Some((pid, ppid))
            })
            .collect();
        let mut todo = vec![top];
        while let Some(p) = todo.pop() {
            for &(c, _) in parents.iter().filter(|(_, pp)| *pp == p) {
                let cmdline = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
                if cmdline.starts_with(b"/usr/bin/mailcow-ldap-auth\0") {
                    return c;
                }
                todo.push(c);
            }
        }
        panic!("no mailcow-ldap-auth process below buildah's pid {top}");
    }

    /// SIGTERM to the binary itself; its exit status and how long it took.
    fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let pid = self.inner_pid();
        let start = Instant::now();
        run_kill(pid);
        let mut child = self.child.take().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return (st, start.elapsed());
            }
            if start.elapsed() > PROMPT_EXIT {
                // Where each of its threads waits, for the failure message.
                let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
                    .map(|d| {
                        d.flatten()
                            .map(|t| {
                                let f = |n: &str| {
                                    std::fs::read_to_string(t.path().join(n)).unwrap_or_default()
                                };
                                format!("{} {}", f("comm").trim(), f("wchan"))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no exit within {PROMPT_EXIT:?} of SIGTERM; threads: {threads:?}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn run_kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .status();
}

impl Drop for InImage {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

fn write_owned(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(p, Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
}

#[test]
fn image_built_offline_runs_serve_and_sync() {
    let bin = static_binary();
    let b = Buildah::new();
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/build-image.sh"))
        .arg(IMAGE)
        .env("ENGINE", b.engine())
        .env("BIN", &bin)
        .output()
        .unwrap();
    assert!(out.status.success(), "build-image.sh: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some(IMAGE)
    );

    // What the image says about itself (docker format: HEALTHCHECK kept).
    let inspect: serde_json::Value =
        serde_json::from_str(&b.ok(&["inspect", "--type", "image", IMAGE])).unwrap();
    let config = &inspect["Docker"]["config"];
    assert_eq!(config["User"], "10001:10001", "{config}");
    assert_eq!(
        config["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/usr/bin/mailcow-ldap-auth", "health"])
    );
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/bin/mailcow-ldap-auth"])
    );
    assert_eq!(config["Cmd"], serde_json::json!(["sync", "--every", "60s"]));
    let ctr = b.ok(&["from", IMAGE]);
    let rootfs = PathBuf::from(b.ok(&["mount", &ctr]));
    let files: Vec<String> = walk(&rootfs);
    assert_eq!(
        files,
        [
            "etc/group",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "usr/bin/mailcow-ldap-auth"
        ],
        "the image holds the binary, the CA bundle and its user, nothing else"
    );

    // The directory, mailcow's database and UI, and the config folder as mounted.
    let dir = TempDir::new().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let slapd = Slapd::start_with(dir.path(), &directory(USERS), "");
    let db = Db::new();
    db.sql(&format!(
        "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active) VALUES ('example.org', 10000, 10, 10240, 10240000, 1);\
         INSERT INTO templates (template, type, attributes) VALUES ('Default', 'mailbox', '{DEFAULT_TEMPLATE}');\
         INSERT INTO identity_provider (`key`, `value`) VALUES ('authsource', 'ldap'), ('host', 'localhost'), \
         ('port', '{}'), ('basedn', '{BASE}'), ('username_field', 'mail'), ('filter', ''), \
         ('attribute_field', 'othermailbox'), ('binddn', '{READER_DN}'), ('bindpass', '{READER_PW}'), \
         ('mappers', '[\"default\"]'), ('templates', '[\"Default\"]'), ('login_provisioning', '1'), \
         ('import_users', '0'), ('periodic_sync', '0'), ('sync_interval', '1')",
        slapd.port
    ));
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&conf, Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
    write_owned(&conf.join("db-password"), &format!("{DB_PASSWORD}\n"));
    // "localhost", not 127.0.0.1: names are resolved inside the image.
    let database = format!(
        "[database]\nhost = \"localhost\"\nport = {}\nname = \"{}\"\nuser = \"{DB_USER}\"\n\
         password_file = \"/etc/mailcow-ldap-auth/db-password\"\n",
        db.server.port, db.name
    );
    let port = free_port();
    write_owned(
        &conf.join("serve.toml"),
        &format!(
            "log_target = \"stderr\"\n[ldap]\n{database}[dovecot]\nuid = \"5000\"\ngid = \"5000\"\n\
             [mailcow]\nsettings_from_database = true\n[serve]\nhttp_listen = \"[::]:{port}\"\n"
        ),
    );
    write_owned(
        &conf.join("sync.toml"),
        &format!(
            "log_target = \"stderr\"\n[ldap]\n{database}[mailcow]\nsettings_from_database = true\n\
             [sync]\nimport_users = true\npage_size = 2\n"
        ),
    );

    // --- serve, as the image's user, on [::] (IPv4 and IPv6).
    let mut serve = InImage::start(
        b.run(&ctr, &conf, "serve.toml", &["serve"]),
        dir.path().join("serve.log"),
    );
    serve.wait_log("serve: ready", START);
    let body = r#"{"username":"u7@example.org","password":"pw-7","real_rip":"192.0.2.1","service":"imap"}"#;
    let r = raw_http(port, "POST", "/auth", &[], body);
    assert_eq!(r.status, 200, "{r:?}\n{}", serve.log());
    assert_eq!(r.json["user"], "u7@example.org");
    let v6 = raw_http_v6(port);
    assert!(
        v6.starts_with("HTTP/1.1 200"),
        "serve should answer over IPv6 on [::]: {v6}"
    );
    let health = b
        .run(&ctr, &conf, "serve.toml", &["health"])
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "health of serve: {}",
        text(&health)
    );
    assert!(String::from_utf8_lossy(&health.stdout).starts_with("healthy"));
    let (status, took) = serve.terminate();
    assert!(
        status.success(),
        "serve after SIGTERM: {status}\n{}",
        serve.log()
    );
    assert!(serve.log().contains("serve: stopped"), "{}", serve.log());
    eprintln!("serve in the image stopped {took:?} after SIGTERM");
    let unhealthy = b
        .run(&ctr, &conf, "serve.toml", &["health"])
        .output()
        .unwrap();
    assert_eq!(unhealthy.status.code(), Some(1), "{}", text(&unhealthy));

    // --- sync --every: a first import, stopped by SIGTERM at some point of the
    // run (between two pages, or after it): whatever was written is whole.
    let mut sync = InImage::start(
        b.run(&ctr, &conf, "sync.toml", &["sync", "--every", "1h"]),
        dir.path().join("sync.log"),
    );
    sync.wait_log("started on", START);
    let (status, took) = sync.terminate();
    assert!(
        status.success(),
        "sync after SIGTERM: {status}\n{}",
        sync.log()
    );
    assert!(sync.log().contains("stopped by a signal"), "{}", sync.log());
    let mailboxes: usize = db.value("SELECT COUNT(*) FROM mailbox").parse().unwrap();
    let whole = db.value(
        "SELECT COUNT(*) FROM mailbox m JOIN alias a ON a.address = m.username AND a.goto = m.username \
         JOIN quota2 q ON q.username = m.username",
    );
    assert_eq!(whole, mailboxes.to_string(), "every mailbox written whole");
    eprintln!("sync stopped {took:?} after SIGTERM with {mailboxes} of {USERS} mailboxes");

    // Again to the end; health as the HEALTHCHECK sees it; then SIGTERM while it
    // waits for the next run (an hour away): at once.
    let mut sync = InImage::start(
        b.run(&ctr, &conf, "sync.toml", &["sync", "--every", "1h"]),
        dir.path().join("sync2.log"),
    );
    sync.wait_log("directory entries", START * 4);
    let n: usize = db
        .value("SELECT COUNT(*) FROM mailbox WHERE username REGEXP '^u[0-9]+@example.org$'")
        .parse()
        .unwrap();
    assert_eq!(
        n,
        USERS,
        "every generated user has a mailbox:\n{}",
        sync.log()
    );
    assert!(sync.log().contains(", failed 0"), "{}", sync.log());
    let health = b
        .run(&ctr, &conf, "sync.toml", &["health"])
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "health of the sync: {}",
        text(&health)
    );
    let (status, took) = sync.terminate();
    assert!(status.success(), "{status}\n{}", sync.log());
    eprintln!("sync --every 1h stopped {took:?} after SIGTERM while waiting");
    let _ = b.ok(&["rm", &ctr]);
}

/// `GET /health` over IPv6 loopback: the status line and the rest.
fn raw_http_v6(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("::1", port)).expect("connect to [::1]");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Regular files below `root`, relative, sorted.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}
