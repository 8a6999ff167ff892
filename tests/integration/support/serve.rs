//! `mailcow-ldap-auth serve` started as a process, stopped by SIGTERM to its pid.

use super::{bin, free_port, wait_for_port};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Serve {
    pub port: u16,
    pub socket: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// An HTTP response: status and parsed JSON body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub json: serde_json::Value,
}

impl Serve {
    /// The `[serve]` section for a fresh port and socket under `dir`.
    pub fn section(dir: &Path, extra: &str) -> (String, u16, PathBuf) {
        let port = free_port();
        let socket = dir.join("saslauthd").join("mux");
        (
            format!(
                "[serve]\nhttp_listen = \"127.0.0.1:{port}\"\nsaslauthd_socket = \"{}\"\nsocket_mode = \"0666\"\n{extra}\n",
                socket.display()
            ),
            port,
            socket,
        )
    }

    /// Start `serve` with `config` (which must contain the section from [`Serve::section`]).
    pub fn start(config: &Path, port: u16, socket: PathBuf) -> Serve {
        Self::start_cmd(Command::new(bin()), config, port, socket)
    }

    /// Like [`Serve::start`], as user and group `ids` (what a container's
    /// `USER` line does), running `binary` (which that user must reach).
    pub fn start_as(
        binary: &Path,
        ids: (u32, u32),
        config: &Path,
        port: u16,
        socket: PathBuf,
    ) -> Serve {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(binary);
        // std drops the supplementary groups when it changes the uid as root.
        c.uid(ids.0).gid(ids.1);
        Self::start_cmd(c, config, port, socket)
    }

    /// Start `serve` through `cmd` (the binary, or a wrapper that runs it);
    /// `port` is where the test reaches its HTTP listener.
    pub fn start_cmd(mut cmd: Command, config: &Path, port: u16, socket: PathBuf) -> Serve {
        let log = config.with_extension("serve.log");
        let child = cmd
            .arg("-c")
            .arg(config)
            .arg("serve")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("start serve");
        let mut s = Serve {
            port,
            socket,
            log,
            child: Some(child),
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("serve exited with {status}: {}", self.log_text());
                }
            }
            // The socket file appears at bind(), before listen(): a connect
            // in between is refused, so readiness is a connect that works.
            if UnixStream::connect(&self.socket).is_ok()
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_for_port(self.port, Duration::from_millis(1), "serve");
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("serve is running")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status();
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-s", "TERM", &c.id().to_string()])
            .status();
        c.wait().ok()
    }

    /// One HTTP request, `Connection: close`.
    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        raw_http(self.port, method, path, headers, body)
    }

    pub fn auth(&self, user: &str, password: &str, service: &str) -> Response {
        let body = serde_json::json!({"username": user, "password": password, "real_rip": "192.0.2.9", "service": service});
        self.http("POST", "/auth", &[], &body.to_string())
    }

    /// One saslauthd request; `None` when the server closed without a reply.
    pub fn sasl(&self, login: &str, password: &str, service: &str, realm: &str) -> Option<String> {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut req = Vec::new();
        for f in [login, password, service, realm] {
            req.extend_from_slice(&(f.len() as u16).to_be_bytes());
            req.extend_from_slice(f.as_bytes());
        }
        s.write_all(&req).unwrap();
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            return None;
        }
        let mut text = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut text).unwrap();
        Some(String::from_utf8(text).unwrap())
    }
}

pub fn raw_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = out
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    Response { status, json }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}
