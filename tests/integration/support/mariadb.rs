//! A private MariaDB server with the mailcow schema subset (`schema.sql`).
//!
//! One server is shared by the tests that run at the same time (each test
//! gets its own database); it is stopped by pid when the last test holding it
//! finishes, and started again by the next one.

use super::{free_port, require, run_ok, wait_for_port, Pki};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub const USER: &str = "mailcow";
pub const PASSWORD: &str = "mailcowpw";
pub const SCHEMA: &str = include_str!("../schema.sql");

pub struct Server {
    _dir: tempfile::TempDir,
    pub port: u16,
    pub socket: PathBuf,
    pub pki: Pki,
    child: Mutex<Option<Child>>,
}

static SHARED: Mutex<Weak<Server>> = Mutex::new(Weak::new());
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

impl Server {
    /// The running shared server, started if no test holds one.
    pub fn shared() -> Arc<Server> {
        let mut guard = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = guard.upgrade() {
            return s;
        }
        let s = Arc::new(Server::start());
        *guard = Arc::downgrade(&s);
        s
    }

    fn start() -> Server {
        require("mariadbd", "mariadb-server");
        require("mariadb-install-db", "mariadb-server");
        let dir = tempfile::Builder::new()
            .prefix("mla-mariadb-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let pki = Pki::create(dir.path());
        run_ok(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                // Its own temporary folder: a shared /tmp let two bootstraps at
                // once fail ("Could not remove temporary table", then aborting).
                .arg(format!("--tmpdir={}", dir.path().display()))
                .args([
                    "--user=root",
                    "--skip-test-db",
                    "--auth-root-authentication-method=socket",
                ])
                .stdout(Stdio::null()),
        );
        let port = free_port();
        let socket = dir.path().join("mysqld.sock");
        let log = std::fs::File::create(dir.path().join("mariadbd.log")).unwrap();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--tmpdir={}", dir.path().display()))
            .arg(format!("--port={port}"))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mariadbd.pid").display()
            ))
            .args(["--bind-address=127.0.0.1", "--user=root", "--skip-log-bin"])
            .args(["--innodb-buffer-pool-size=64M", "--max-connections=300"])
            .arg(format!("--ssl-ca={}", pki.ca.display()))
            .arg(format!("--ssl-cert={}", pki.cert.display()))
            .arg(format!("--ssl-key={}", pki.key.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start mariadbd");
        let s = Server {
            _dir: dir,
            port,
            socket,
            pki,
            child: Mutex::new(Some(child)),
        };
        wait_for_port(port, Duration::from_secs(60), "mariadbd");
        // The TCP listener can be up before the unix socket listens (a
        // connection then is refused: "Can't connect ... through socket (111)"):
        // wait until root gets an answer over the socket too.
        let end = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", s.socket.display()))
                .args(["-uroot", "-e", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|st| st.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                std::time::Instant::now() < end,
                "mariadbd did not answer on {} within 60 s",
                s.socket.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s.root_sql(&format!(
            "CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';\
             CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}';\
             GRANT ALL ON `mla\\_%`.* TO '{USER}'@'127.0.0.1';\
             GRANT ALL ON `mla\\_%`.* TO '{USER}'@'localhost';"
        ));
        s
    }

    /// Run SQL as root over the socket.
    pub fn root_sql(&self, sql: &str) -> String {
        let out = run_ok(
            Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", self.socket.display()))
                .args(["-uroot", "--batch", "--skip-column-names", "-e", sql]),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn stop(&self) {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut c) = guard.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One test's database on the shared server, loaded with the schema subset.
pub struct Db {
    pub server: Arc<Server>,
    pub name: String,
}

impl Db {
    pub fn new() -> Db {
        Db::on(Server::shared())
    }

    /// A database on a server of its own (for tests that time what the
    /// database does: other tests' work on the shared server stretches it).
    pub fn private() -> Db {
        Db::on(Arc::new(Server::start()))
    }

    fn on(server: Arc<Server>) -> Db {
        let name = format!(
            "mla_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        server.root_sql(&format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
        ));
        server.root_sql(&format!("USE `{name}`; {SCHEMA}"));
        Db { server, name }
    }

    /// Run SQL in this database; returns the rows, tab-separated, one per line.
    pub fn sql(&self, sql: &str) -> String {
        self.server.root_sql(&format!("USE `{}`; {sql}", self.name))
    }

    /// A single value (first column of the first row), trimmed.
    pub fn value(&self, sql: &str) -> String {
        self.sql(sql).lines().next().unwrap_or("").trim().to_owned()
    }

    /// The `[database]` section for this database over TCP.
    pub fn section(&self) -> String {
        format!(
            "[database]\nhost = \"127.0.0.1\"\nport = {}\nname = \"{}\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\nconnect_timeout_ms = 2000\n",
            self.server.port, self.name
        )
    }

    /// The `[database]` section for this database over the unix socket
    /// (reachable from any network namespace).
    pub fn socket_section(&self) -> String {
        format!(
            "[database]\nsocket = \"{}\"\nname = \"{}\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\nconnect_timeout_ms = 2000\n",
            self.server.socket.display(),
            self.name
        )
    }

    pub fn ca(&self) -> &Path {
        &self.server.pki.ca
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.server.socket.display()))
            .args([
                "-uroot",
                "-e",
                &format!("DROP DATABASE IF EXISTS `{}`", self.name),
            ])
            .output();
    }
}
