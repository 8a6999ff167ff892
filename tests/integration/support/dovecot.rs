//! A private Dovecot 2.3 whose passdb and userdb are the binary under test
//! (`driver = checkpassword`): IMAP, POP3, ManageSieve and an auth-client
//! TCP listener (for Postfix SASL) on loopback ports, everything else in a
//! folder of the test's temporary directory.
//!
//! Permissions matter here as they do on a real server: Dovecot runs the
//! helper as its internal user `dovecot`, so the helper's config (0640,
//! group dovecot), the folders above it and the binary must be reachable by
//! that user; the mail processes run as the uid/gid the helper returns
//! (`nobody`/`nogroup` here), so the mail folder belongs to them.

use super::{bin, free_port, require, run_ok};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged uid/gid the mail processes run as (`nobody`/`nogroup` on Debian).
pub const MAIL_UID: u32 = 65534;
pub const MAIL_GID: u32 = 65534;

pub struct Dovecot {
    /// `<root>/dovecot`: config, runtime folders, log.
    pub dir: PathBuf,
    /// Dovecot's own config file (`dovecot -c` / `doveadm -c`).
    pub conf: PathBuf,
    /// The helper's config file (`mailcow-ldap-auth -c`).
    pub helper_config: PathBuf,
    /// Parent of every mailbox home; owned by [`MAIL_UID`].
    pub mail_dir: PathBuf,
    /// The helper's `state_dir`; writable by `dovecot`.
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    /// The helper binary as Dovecot runs it (see [`helper_binary`]).
    pub helper_bin: PathBuf,
    pub imap_port: u16,
    pub pop3_port: u16,
    pub sieve_port: u16,
    /// auth-client protocol over TCP (what Postfix's `smtpd_sasl_type = dovecot` speaks).
    pub auth_port: u16,
    /// The passdb/userdb section of Dovecot's config.
    auth_conf: String,
    /// Folders bind-mounted (source, target) in a private mount namespace for
    /// Dovecot and doveadm, as a container's volumes (see [`Dovecot::start_mounted`]).
    mounts: Vec<(PathBuf, PathBuf)>,
    child: Option<Child>,
}

fn dovecot_ids() -> (u32, u32) {
    let out = run_ok(Command::new("id").arg("-u").arg("dovecot"));
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = run_ok(Command::new("id").arg("-g").arg("dovecot"));
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (uid, gid)
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

impl Dovecot {
    /// Write the configs and start Dovecot under `root` (the test's temporary
    /// directory, made traversable for the `dovecot` and mail users).
    ///
    /// `helper_body` is the helper's config without `state_dir`, `log_target`
    /// and `[dovecot]`, which the fixture adds: typically `Slapd::ldap_section()`
    /// plus whatever a test needs (a `[database]` section, say). Top-level keys
    /// in it must come before its first `[section]`.
    pub fn start(root: &Path, helper_body: &str) -> Dovecot {
        Self::start_with(root, helper_body, default_auth)
    }

    /// Like [`Dovecot::start`], with the passdb/userdb part of Dovecot's config
    /// made by `auth(helper_args)`, where `helper_args` is what follows
    /// `args =` for the helper (`BIN -c CONFIG checkpassword`).
    pub fn start_with(
        root: &Path,
        helper_body: &str,
        auth: impl FnOnce(&str) -> String,
    ) -> Dovecot {
        Self::start_mounted(root, helper_body, auth, Vec::new())
    }

    /// Like [`Dovecot::start_with`], with Dovecot and doveadm in a private mount
    /// namespace (`unshare --mount`) where each `(source, target)` folder is
    /// bind-mounted, as a container's volumes are: `(mailcow's data/conf/dovecot,
    /// /etc/dovecot)` lets `auth` include the files at the paths they have in
    /// mailcow's container. The host's mounts stay as they are.
    pub fn start_mounted(
        root: &Path,
        helper_body: &str,
        auth: impl FnOnce(&str) -> String,
        mounts: Vec<(PathBuf, PathBuf)>,
    ) -> Dovecot {
        require("dovecot", "dovecot-core");
        require("doveadm", "dovecot-core");
        require("imap", "dovecot-imapd");
        require("pop3", "dovecot-pop3d");
        require("managesieve", "dovecot-managesieved");
        require("checkpassword-reply", "dovecot-core");

        // TempDir creates 0700 folders: the helper (user dovecot) must traverse it.
        set_mode(root, 0o755);
        let dir = root.join("dovecot");
        std::fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o755);
        let mail_dir = dir.join("mail");
        std::fs::create_dir_all(&mail_dir).unwrap();
        chown(&mail_dir, Some(MAIL_UID), Some(MAIL_GID)).unwrap();
        set_mode(&mail_dir, 0o755);
        let (dc_uid, dc_gid) = dovecot_ids();
        let state_dir = dir.join("helper-state");
        std::fs::create_dir_all(&state_dir).unwrap();
        chown(&state_dir, Some(dc_uid), Some(dc_gid)).unwrap();
        set_mode(&state_dir, 0o700);

        let mut d = Dovecot {
            conf: dir.join("dovecot.conf"),
            helper_config: dir.join("mailcow-ldap-auth.toml"),
            log_path: dir.join("dovecot.log"),
            helper_bin: helper_binary(&dir),
            mail_dir,
            state_dir,
            dir,
            imap_port: free_port(),
            pop3_port: free_port(),
            sieve_port: free_port(),
            auth_port: free_port(),
            auth_conf: String::new(),
            mounts,
            child: None,
        };
        d.auth_conf = auth(&d.helper_args());
        d.write_helper_config(helper_body);
        d.write_conf();
        d.run();
        d
    }

    /// (Re)write the helper's config: root:dovecot 0640, as on a real server.
    /// Takes effect at the next login (one helper process per request).
    pub fn write_helper_config(&self, body: &str) {
        let text = format!(
            "state_dir = \"{state}\"\n\
             log_target = \"stderr\"\n\
             {body}\n\
             [dovecot]\n\
             uid = \"{MAIL_UID}\"\n\
             gid = \"{MAIL_GID}\"\n\
             home = \"{mail}/%d/%n\"\n",
            state = self.state_dir.display(),
            mail = self.mail_dir.display(),
        );
        std::fs::write(&self.helper_config, text).unwrap();
        let (_, dc_gid) = dovecot_ids();
        chown(&self.helper_config, Some(0), Some(dc_gid)).unwrap();
        set_mode(&self.helper_config, 0o640);
    }

    /// What follows `args =` in a checkpassword passdb/userdb for the helper.
    /// Dovecot splits it on spaces (no quoting), so no path may contain one.
    pub fn helper_args(&self) -> String {
        let args = format!(
            "{} -c {} checkpassword",
            self.helper_bin.display(),
            self.helper_config.display()
        );
        assert_eq!(
            args.split(' ').count(),
            4,
            "paths with spaces cannot be passed through checkpassword args: {args}"
        );
        args
    }

    /// The home the helper gives `user@domain`.
    pub fn home_of(&self, user: &str) -> PathBuf {
        let (local, domain) = user.split_once('@').unwrap_or((user, ""));
        self.mail_dir.join(domain).join(local)
    }

    fn write_conf(&self) {
        let d = self.dir.display();
        let text = format!(
            "# Written by the integration tests (tests/integration/support/dovecot.rs).\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = dovecot-test-{imap}\n\
             log_path = {log}\n\
             info_log_path = {log}\n\
             protocols = imap pop3 sieve\n\
             listen = 127.0.0.1\n\
             ssl = no\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             # No cache (auth_cache_size = 0 is the default): every login reaches the helper.\n\
             auth_cache_size = 0\n\
             auth_failure_delay = 0\n\
             auth_verbose = yes\n\
             mail_location = maildir:~/Maildir\n\
             first_valid_uid = 500\n\
             \n\
             {auth_conf}\n\
             \n\
             service imap-login {{\n\
             \x20 inet_listener imap {{\n\
             \x20   address = 127.0.0.1\n\
             \x20   port = {imap}\n\
             \x20 }}\n\
             \x20 inet_listener imaps {{\n\
             \x20   port = 0\n\
             \x20 }}\n\
             }}\n\
             service pop3-login {{\n\
             \x20 inet_listener pop3 {{\n\
             \x20   address = 127.0.0.1\n\
             \x20   port = {pop3}\n\
             \x20 }}\n\
             \x20 inet_listener pop3s {{\n\
             \x20   port = 0\n\
             \x20 }}\n\
             }}\n\
             service managesieve-login {{\n\
             \x20 inet_listener sieve {{\n\
             \x20   address = 127.0.0.1\n\
             \x20   port = {sieve}\n\
             \x20 }}\n\
             }}\n\
             service auth {{\n\
             \x20 unix_listener auth-client {{\n\
             \x20   mode = 0660\n\
             \x20 }}\n\
             \x20 # Postfix's smtpd_sasl_type = dovecot, over TCP.\n\
             \x20 inet_listener auth-inet {{\n\
             \x20   address = 127.0.0.1\n\
             \x20   port = {auth}\n\
             \x20 }}\n\
             }}\n\
             # No per-IP authentication penalty (2 s, doubling to 15 s, for every\n\
             # failure from 127.0.0.1): the documented way to turn it off.\n\
             service anvil {{\n\
             \x20 unix_listener anvil-auth-penalty {{\n\
             \x20   mode = 0\n\
             \x20 }}\n\
             }}\n\
             plugin {{\n\
             \x20 sieve = file:~/sieve;active=~/.dovecot.sieve\n\
             }}\n",
            log = self.log_path.display(),
            imap = self.imap_port,
            pop3 = self.pop3_port,
            sieve = self.sieve_port,
            auth = self.auth_port,
            auth_conf = self.auth_conf,
        );
        std::fs::write(&self.conf, text).unwrap();
    }

    fn ports(&self) -> [(u16, &'static str); 4] {
        [
            (self.imap_port, "imap"),
            (self.pop3_port, "pop3"),
            (self.sieve_port, "managesieve"),
            (self.auth_port, "auth"),
        ]
    }

    /// Start the master in the foreground (`-F`: the spawned pid is the master)
    /// and wait until every listener accepts connections.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "dovecot already running");
        let stderr = std::fs::File::create(self.dir.join("dovecot.stderr")).unwrap();
        let child = self
            .command("dovecot")
            .arg("-c")
            .arg(&self.conf)
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start dovecot");
        self.child = Some(child);
        let limit = Duration::from_secs(15);
        let end = Instant::now() + limit;
        for (port, what) in self.ports() {
            loop {
                if std::net::TcpStream::connect_timeout(
                    &([127, 0, 0, 1], port).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
                {
                    break;
                }
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    self.child = None;
                    panic!(
                        "dovecot exited ({status}) before listening for {what}:\n{}\n{}",
                        std::fs::read_to_string(self.dir.join("dovecot.stderr"))
                            .unwrap_or_default(),
                        self.log()
                    );
                }
                assert!(
                    Instant::now() < end,
                    "dovecot did not listen for {what} on 127.0.0.1:{port} within {limit:?}:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `program`, in the private mount namespace when there are mounts. `unshare`
    /// and `sh` exec what follows, so the pid is the program's.
    fn command(&self, program: &str) -> Command {
        if self.mounts.is_empty() {
            return Command::new(program);
        }
        let mut script = String::new();
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-ec"]);
        for (i, _) in self.mounts.iter().enumerate() {
            script.push_str(&format!(
                "mount --bind \"${}\" \"${}\"\n",
                2 * i + 1,
                2 * i + 2
            ));
        }
        script.push_str(&format!("shift {}\nexec \"$@\"\n", 2 * self.mounts.len()));
        c.arg(script).arg("sh");
        for (src, dst) in &self.mounts {
            c.arg(src).arg(dst);
        }
        c.arg(program);
        c
    }

    /// The master's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stop the master by its pid (it stops its children) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// `doveadm -c CONF args...`; the caller checks the status.
    pub fn doveadm(&self, args: &[&str]) -> Output {
        self.command("doveadm")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run doveadm")
    }

    /// `doveadm user USER`: its exit status, the userdb fields it printed
    /// (`field<TAB>value` lines, e.g. `uid`, `home`, `quota_rule`), and its
    /// whole output for assertion messages.
    pub fn user_fields(
        &self,
        user: &str,
    ) -> (
        std::process::ExitStatus,
        std::collections::BTreeMap<String, String>,
        String,
    ) {
        let out = self.doveadm(&["user", user]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let fields = if out.status.success() {
            stdout
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect()
        } else {
            Default::default()
        };
        let all = format!(
            "{} {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, fields, all)
    }

    /// Dovecot's log so far (the helper's stderr lines end up here).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The log from byte `from` on (see [`Dovecot::log_len`]).
    pub fn log_since(&self, from: usize) -> String {
        let log = self.log();
        log.get(from..).unwrap_or("").to_owned()
    }

    /// The current length of the log, to read only what follows.
    pub fn log_len(&self) -> usize {
        std::fs::metadata(&self.log_path)
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    /// Wait until the log contains `needle` (log lines are written by Dovecot's
    /// log process, possibly just after the client got its answer).
    pub fn wait_for_log(&self, from: usize, needle: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let text = self.log_since(from);
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < end,
                "{needle:?} not in Dovecot's log within {limit:?}; log since offset {from}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// passdb and userdb both the helper, as in the tests' default setup.
pub fn default_auth(helper_args: &str) -> String {
    format!(
        "passdb {{\n  driver = checkpassword\n  args = {helper_args}\n}}\n\
         userdb {{\n  driver = checkpassword\n  args = {helper_args}\n}}\n"
    )
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The built binary, or a link to it inside `dir` when user `dovecot` could
/// not reach the build folder (a checkout under a 0700 home, say): Dovecot
/// runs the helper as `dovecot`, which must traverse every folder above it.
pub fn helper_binary(dir: &Path) -> PathBuf {
    let built = bin();
    let reachable = built.ancestors().skip(1).all(|a| {
        std::fs::metadata(a)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    });
    if reachable {
        return built;
    }
    let linked = dir.join("mailcow-ldap-auth");
    if std::fs::hard_link(&built, &linked).is_err() {
        std::fs::copy(&built, &linked).unwrap();
    }
    set_mode(&linked, 0o755);
    linked
}
