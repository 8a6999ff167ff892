//! A private Postfix whose smtpd offers SMTP AUTH through Dovecot's auth
//! service (`smtpd_sasl_type = dovecot`) over TCP. Nothing is delivered: the
//! tests only authenticate.
//!
//! Postfix is a daemon: `postfix start` returns once the master runs in the
//! background, and the master's pid is in `queue_directory/pid/master.pid`.
//! It prints fatal errors only to a terminal or syslog, so a failing command
//! is run again under `script` to show why (and `maillog_file` keeps a log).

use super::{free_port, require, run_ok, wait_for_port};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Postfix {
    /// `<root>/postfix`: holds everything below.
    pub dir: PathBuf,
    /// The config_directory (main.cf, master.cf): root-owned, apart from the queue
    /// (`postfix check` warns about anything in it not owned by root).
    pub conf_dir: PathBuf,
    pub queue_dir: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub smtp_port: u16,
    /// The master's pid, read from its pid file once it runs.
    master_pid: Option<u32>,
    /// `postfix start` was run (so Drop must stop whatever it started).
    started: bool,
}

impl Postfix {
    /// Configure and start Postfix under `root`, with SASL through Dovecot's
    /// auth-client TCP listener on `dovecot_auth_port`.
    pub fn start(root: &Path, dovecot_auth_port: u16) -> Postfix {
        Self::start_with(root, dovecot_auth_port, "")
    }

    /// Like [`Postfix::start`], with `extra_main_cf` appended to main.cf (a
    /// later line wins over an earlier one for the same parameter).
    pub fn start_with(root: &Path, dovecot_auth_port: u16, extra_main_cf: &str) -> Postfix {
        require("postfix", "postfix");
        require("postconf", "postfix");
        let dir = root.join("postfix");
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = Postfix {
            conf_dir: dir.join("etc"),
            queue_dir: Self::queue_dir_for(root),
            data_dir: dir.join("data"),
            log_path: dir.join("postfix.log"),
            dir,
            smtp_port: free_port(),
            master_pid: None,
            started: false,
        };
        std::fs::create_dir_all(&p.conf_dir).unwrap();
        std::fs::create_dir_all(&p.queue_dir).unwrap();
        std::fs::create_dir_all(&p.data_dir).unwrap();
        // The master locks and writes its data_directory as mail_owner.
        let out = run_ok(Command::new("id").arg("-u").arg("postfix"));
        let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let out = run_ok(Command::new("id").arg("-g").arg("postfix"));
        let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        std::os::unix::fs::chown(&p.data_dir, Some(uid), Some(gid)).unwrap();
        p.write_conf(dovecot_auth_port, extra_main_cf);
        p.postfix_ok("check");
        p.started = true;
        p.postfix_ok("start");
        // `postfix start` returns once the master is up (`master -w`): its pid is written.
        p.master_pid = p.read_pid();
        assert!(
            p.master_pid.is_some(),
            "postfix started but {} holds no pid",
            p.pid_file().display()
        );
        wait_for_port(p.smtp_port, Duration::from_secs(15), "postfix smtpd");
        p
    }

    /// The queue directory a Postfix started under `root` uses (a Dovecot
    /// socket for it, `private/auth`, can be set up before Postfix starts).
    pub fn queue_dir_for(root: &Path) -> PathBuf {
        root.join("postfix").join("queue")
    }

    fn write_conf(&self, auth_port: u16, extra: &str) {
        let main_cf = format!(
            "# Written by the integration tests (tests/integration/support/postfix.rs).\n\
             compatibility_level = 3.6\n\
             queue_directory = {queue}\n\
             data_directory = {data}\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             maillog_file_prefixes = {dir}\n\
             maillog_file = {log}\n\
             myhostname = mail.example.org\n\
             mydomain = example.org\n\
             myorigin = $myhostname\n\
             mydestination =\n\
             local_recipient_maps =\n\
             alias_maps =\n\
             alias_database =\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             default_transport = discard\n\
             relay_transport = discard\n\
             smtpd_banner = $myhostname ESMTP test\n\
             smtpd_tls_security_level = none\n\
             smtpd_sasl_auth_enable = yes\n\
             smtpd_sasl_type = dovecot\n\
             smtpd_sasl_path = inet:127.0.0.1:{auth_port}\n\
             smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination\n\
             {extra}\n",
            queue = self.queue_dir.display(),
            data = self.data_dir.display(),
            log = self.log_path.display(),
            dir = self.dir.display(),
        );
        // postlogd normally exits after max_use (100) lines or max_idle; while the master
        // respawns it, the log socket's queue (net.unix.max_dgram_qlen, often 10) can
        // fill and every Postfix process, master included, blocks writing to it: a
        // hang seen under load. A long-lived postlogd for the test's short life avoids it.
        let master_cf = format!(
            "# service type private unpriv chroot wakeup maxproc command\n\
             127.0.0.1:{port} inet n - n - - smtpd\n\
             cleanup   unix  n - n - 0 cleanup\n\
             qmgr      unix  n - n 300 1 qmgr\n\
             rewrite   unix  - - n - - trivial-rewrite\n\
             bounce    unix  - - n - 0 bounce\n\
             defer     unix  - - n - 0 bounce\n\
             trace     unix  - - n - 0 bounce\n\
             verify    unix  - - n - 1 verify\n\
             flush     unix  n - n 1000? 0 flush\n\
             proxymap  unix  - - n - - proxymap\n\
             anvil     unix  - - n - 1 anvil\n\
             scache    unix  - - n - 1 scache\n\
             discard   unix  - - n - - discard\n\
             postlog   unix-dgram n - n - 1 postlogd -o max_use=1000000 -o max_idle=86400\n",
            port = self.smtp_port,
        );
        std::fs::write(self.conf_dir.join("main.cf"), main_cf).unwrap();
        std::fs::write(self.conf_dir.join("master.cf"), master_cf).unwrap();
    }

    fn pid_file(&self) -> PathBuf {
        self.queue_dir.join("pid/master.pid")
    }

    fn read_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `postfix -c DIR args...`.
    pub fn postfix(&self, args: &[&str]) -> Output {
        Command::new("postfix")
            .arg("-c")
            .arg(&self.conf_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run postfix")
    }

    /// Run `postfix -c DIR cmd`; on failure run it again under `script` (a
    /// pseudo-terminal, where Postfix prints its fatal errors) and panic with all of it.
    fn postfix_ok(&self, cmd: &str) {
        let out = self.postfix(&[cmd]);
        if out.status.success() {
            return;
        }
        let again = Command::new("script")
            .arg("-qec")
            .arg(format!("postfix -c {} {cmd}", self.conf_dir.display()))
            .arg("/dev/null")
            .stdin(Stdio::null())
            .output();
        panic!(
            "postfix -c {} {cmd} failed ({}):\n{}{}\nunder script: {}\nlog:\n{}",
            self.conf_dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            match again {
                Ok(o) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => format!("cannot run script: {e}"),
            },
            self.log()
        );
    }

    /// Postfix's log (`maillog_file`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stop: `postfix stop`, then the master's pid if it is still alive.
    pub fn stop(&mut self) {
        if !std::mem::take(&mut self.started) {
            return;
        }
        let pid = self.master_pid.take().or_else(|| self.read_pid());
        // Bounded: a Postfix that cannot log blocks even `postfix stop`.
        let stopped = Command::new("timeout")
            .args(["15", "postfix", "-c"])
            .arg(&self.conf_dir)
            .arg("stop")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        let Some(pid) = pid else {
            return;
        };
        if !stopped {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let end = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            if Instant::now() > end {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether `pid` is a live process (a zombie waiting for its reaper is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("");
            state != "Z" && state != "X"
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}
