//! The runtime image (`packaging/Dockerfile`), built here with no registry
//! access by `packaging/build-image.sh` with buildah (vfs storage in a private
//! folder, `--isolation chroot`), and run with `buildah run --isolation
//! chroot` (the host's network, the image's user and filesystem): serve and
//! `sync --every` inside it against this suite's slapd, MariaDB and Redis, on
//! the files `contrib/mailcow/install.sh serve sync` wrote, with the volumes,
//! environment and command of the override file it wrote (only the ports
//! moved; `mysql` and `redis-mailcow` resolved by the static binary through
//! `--add-host`), `health` as the HEALTHCHECK runs it, and SIGTERM to the
//! process inside.
//!
//! Needs the static release binary: `packaging/build-release.sh` (tests/run.sh
//! builds it before the tests; this test refuses a binary older than the sources).

use crate::mailcow_install::{install_with, mailcow_folder};
use crate::provision::DEFAULT_TEMPLATE;
use crate::support::mariadb::Db;
use crate::support::redis::{Redis, PASSWORD as REDIS_PASSWORD};
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

    /// `buildah run` of the binary in container `ctr` with the service's
    /// volumes and environment, as docker compose would start it.
    fn run(&self, ctr: &str, svc: &Service, args: &[impl AsRef<str>]) -> Command {
        let mut c = self.cmd();
        c.args(["run", "--isolation", "chroot"]);
        for (host, inside, ro) in &svc.volumes {
            c.arg("--volume").arg(format!(
                "{}:{inside}{}",
                host.display(),
                if *ro { ":ro" } else { "" }
            ));
        }
        for e in &svc.env {
            c.args(["--env", e]);
        }
        c.args([ctr, "--", "/usr/bin/mailcow-ldap-auth"]);
        c.args(args.iter().map(AsRef::as_ref));
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

    // The directory, mailcow's database, UI and Redis.
    let dir = TempDir::new().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let slapd = Slapd::start_with(dir.path(), &directory(USERS), "");
    let redis = Redis::start(dir.path());
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

    // The files as contrib/mailcow/install.sh writes them for both routes. Only
    // the ports are moved (mailcow's containers have 3306, 6379 and 9083 to
    // themselves; this machine's servers have ports of their own); the names
    // mysql and redis-mailcow resolve to loopback, as --add-host does below.
    let m = mailcow_folder(dir.path(), &db.name, 1);
    let mc = m.join("mailcow.conf");
    let mut text_mc = std::fs::read_to_string(&mc).unwrap();
    text_mc.push_str(&format!("REDISPASS={REDIS_PASSWORD}\n"));
    std::fs::write(&mc, text_mc).unwrap();
    let out = install_with(&m, &["serve", "sync"]);
    assert!(
        out.status.success(),
        "install.sh serve sync: {}",
        text(&out)
    );
    let port = free_port();
    let conf = m.join("data/conf/mailcow-ldap-auth");
    move_in(
        &conf.join("serve.toml"),
        &[
            ("port = 3306", &format!("port = {}", db.server.port)),
            ("\"[::]:9083\"", &format!("\"[::]:{port}\"")),
        ],
    );
    move_in(
        &conf.join("sync.toml"),
        &[
            ("port = 3306", &format!("port = {}", db.server.port)),
            (
                "@redis-mailcow:6379/",
                &format!("@redis-mailcow:{}/", redis.port),
            ),
        ],
    );
    // Small pages, so that SIGTERM meets a run between two of them.
    let mut sync_toml = std::fs::read_to_string(conf.join("sync.toml")).unwrap();
    sync_toml.push_str("page_size = 2\n");
    std::fs::write(conf.join("sync.toml"), sync_toml).unwrap();
    let override_file = std::fs::read_to_string(m.join("docker-compose.override.yml")).unwrap();
    let serve_svc = Service::from_compose(&override_file, "ldap-auth-mailcow", &m);
    let sync_svc = Service::from_compose(&override_file, "ldap-sync-mailcow", &m);
    assert_eq!(serve_svc.command, ["serve"]);
    assert_eq!(sync_svc.command, ["sync", "--every", "60s"]);
    let ctr = b.ok(&[
        "from",
        "--add-host",
        "mysql:127.0.0.1",
        "--add-host",
        "redis-mailcow:127.0.0.1",
        IMAGE,
    ]);

    // --- serve, as the image's user, on [::] (IPv4 and IPv6), with the shared secret.
    let mut serve = InImage::start(
        b.run(&ctr, &serve_svc, &serve_svc.command),
        dir.path().join("serve.log"),
    );
    serve.wait_log("serve: ready", START);
    let secret =
        std::fs::read_to_string(m.join("data/conf/dovecot/mailcow-ldap-auth/http-secret")).unwrap();
    let body = r#"{"username":"u7@example.org","password":"pw-7","real_rip":"192.0.2.1","service":"imap"}"#;
    let r = raw_http(
        port,
        "POST",
        "/auth",
        &[("X-Auth-Secret", secret.trim())],
        body,
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", serve.log());
    assert_eq!(r.json["user"], "u7@example.org");
    assert_eq!(
        raw_http(port, "POST", "/auth", &[], body).status,
        403,
        "no secret"
    );
    let v6 = raw_http_v6(port);
    assert!(
        v6.starts_with("HTTP/1.1 200"),
        "serve should answer over IPv6 on [::]: {v6}"
    );
    let health = b.run(&ctr, &serve_svc, &["health"]).output().unwrap();
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
    let unhealthy = b.run(&ctr, &serve_svc, &["health"]).output().unwrap();
    assert_eq!(unhealthy.status.code(), Some(1), "{}", text(&unhealthy));

    // --- sync --every: a first import, stopped by SIGTERM at some point of the
    // run (between two pages, or after it): whatever was written is whole.
    let every = ["sync", "--every", "1h"];
    let mut sync = InImage::start(b.run(&ctr, &sync_svc, &every), dir.path().join("sync.log"));
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

    // Again to the end; the Crontasks log; health as the HEALTHCHECK sees it; then
    // SIGTERM while it waits for the next run (an hour away): at once.
    let mut sync = InImage::start(b.run(&ctr, &sync_svc, &every), dir.path().join("sync2.log"));
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
    let cron = redis.cron_log();
    assert!(
        cron.iter().any(
            |l| l.contains("\"task\":\"LDAP Sync (mailcow-ldap-auth)\"") && l.contains("done:")
        ),
        "our run in mailcow's Crontasks log: {cron:?}"
    );
    let health = b.run(&ctr, &sync_svc, &["health"]).output().unwrap();
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

/// Replace each `from` (which must be there) in a file the admin owns, keeping
/// its owner and mode.
fn move_in(p: &Path, moves: &[(&str, &str)]) {
    let mut t = std::fs::read_to_string(p).unwrap();
    for (from, to) in moves {
        assert!(t.contains(from), "{from:?} not in {}:\n{t}", p.display());
        t = t.replace(from, to);
    }
    std::fs::write(p, t).unwrap();
}

/// One service of a docker-compose file as this test needs it: its volumes
/// (`./host:container[:opts]`, relative to the mailcow folder), the
/// environment entries without `${...}`, and its command.
struct Service {
    volumes: Vec<(PathBuf, String, bool)>,
    env: Vec<String>,
    command: Vec<String>,
}

impl Service {
    fn from_compose(text: &str, name: &str, base: &Path) -> Service {
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != format!("  {name}:"))
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with("   ") || l.trim_start().starts_with('#'))
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert!(!block.is_empty(), "no service {name} in:\n{text}");
        let mut s = Service {
            volumes: Vec::new(),
            env: Vec::new(),
            command: Vec::new(),
        };
        let mut section = "";
        for l in block {
            if let Some(item) = l.strip_prefix("- ") {
                match section {
                    "volumes" => {
                        let mut f = item.splitn(3, ':');
                        let (host, ctr) = (f.next().unwrap(), f.next().unwrap());
                        let ro = f.next().unwrap_or("").split(',').any(|o| o == "ro");
                        s.volumes.push((
                            base.join(host.trim_start_matches("./")),
                            ctr.to_owned(),
                            ro,
                        ));
                    }
                    "environment" if !item.contains("${") => s.env.push(item.to_owned()),
                    _ => {}
                }
            } else if let Some((k, v)) = l.split_once(':') {
                section = k;
                if k == "command" {
                    s.command = serde_json::from_str(v.trim()).unwrap();
                }
            }
        }
        s
    }
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
