//! A private Redis server (for mailcow's CRON_LOG list).

use super::{free_port, require, run_ok, wait_for_port};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const PASSWORD: &str = "redispw";

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start(dir: &std::path::Path) -> Redis {
        require("redis-server", "redis-server");
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--requirepass", PASSWORD, "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        wait_for_port(port, Duration::from_secs(10), "redis-server");
        Redis {
            port,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}/0", self.port)
    }

    /// The CRON_LOG list, newest first.
    pub fn cron_log(&self) -> Vec<String> {
        self.cron_log_in(0)
    }

    /// The CRON_LOG list of database `db`, newest first.
    pub fn cron_log_in(&self, db: u32) -> Vec<String> {
        let out = run_ok(
            Command::new("redis-cli")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-a",
                    PASSWORD,
                    "--no-auth-warning",
                    "-n",
                    &db.to_string(),
                ])
                .args(["LRANGE", "CRON_LOG", "0", "-1"]),
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// `HGET hash field` through redis-cli ("" when there is none).
    pub fn hget(&self, hash: &str, field: &str) -> String {
        let out = run_ok(
            Command::new("redis-cli")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-a",
                    PASSWORD,
                    "--no-auth-warning",
                ])
                .args(["HGET", hash, field]),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}
