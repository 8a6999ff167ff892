//! The checkpassword protocol against a real slapd: every answer Dovecot can get.

use crate::support::slapd::{BASE, HMUELLER_PW, READER_DN, READER_PW};
use crate::support::{
    checkpassword, creds, free_port, lookup, write_config, SilentServer, Slapd, StubReply,
};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

struct Env {
    dir: TempDir,
    slapd: Slapd,
    reply: StubReply,
}

impl Env {
    fn new() -> Env {
        let dir = TempDir::new().unwrap();
        let slapd = Slapd::start(dir.path());
        let reply = StubReply::create(dir.path());
        Env { dir, slapd, reply }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A config with the server's plain section plus `extra` lines.
    fn config(&self, extra: &str) -> PathBuf {
        let text = format!(
            "state_dir = \"{}\"\n{}{extra}\n[dovecot]\nuid = \"5000\"\ngid = \"5000\"\nhome = \"/var/vmail/%d/%n\"\n",
            self.path().display(),
            self.slapd.ldap_section()
        );
        write_config(self.path(), "config.toml", &text)
    }

    /// A config whose [ldap] section is given whole.
    fn config_raw(&self, ldap: &str) -> PathBuf {
        let text = format!("state_dir = \"{}\"\n{ldap}\n", self.path().display());
        write_config(self.path(), "config.toml", &text)
    }

    fn login(&self, cfg: &Path, user: &str, pw: &str) -> crate::support::Run {
        checkpassword(
            cfg,
            &creds(user, pw),
            &[("SERVICE", "imap"), ("TCPREMOTEIP", "192.0.2.7")],
            &self.reply,
        )
    }
}

#[test]
fn success_passes_user_and_fields_to_the_reply_program() {
    let e = Env::new();
    let cfg = e.config("");
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.reply.var("USER").as_deref(), Some("jdoe@example.org"));
    assert_eq!(
        e.reply.var("HOME").as_deref(),
        Some("/var/vmail/example.org/jdoe")
    );
    assert_eq!(e.reply.var("userdb_uid").as_deref(), Some("5000"));
    assert_eq!(e.reply.var("userdb_gid").as_deref(), Some("5000"));
    assert_eq!(
        e.reply.var("userdb_home").as_deref(),
        Some("/var/vmail/example.org/jdoe")
    );
    assert_eq!(
        e.reply.var("EXTRA").as_deref(),
        Some("userdb_uid userdb_gid userdb_home")
    );
    assert_eq!(
        e.reply.var("ORIG_UID").as_deref(),
        Some("0"),
        "ORIG_UID must be kept for checkpassword-reply"
    );
    assert_eq!(e.reply.var("AUTHORIZED"), None);
    // No core dumps (soft and hard limit 0), inherited by the reply program:
    // a dump would write the password to disk.
    assert_eq!(e.reply.var("CORE_LIMITS").as_deref(), Some("0 0"));
    // The reply program got its own arguments.
    assert_eq!(e.reply.var("ARGS"), Some(e.reply.out.display().to_string()));
    // The password is nowhere in the reply's environment or the log.
    let env = std::fs::read_to_string(&e.reply.out).unwrap();
    assert!(!env.contains("secret1"));
    assert!(!r.stderr.contains("secret1"));
    assert!(r.stderr.contains("result=accept"), "{}", r.stderr);
    assert!(
        r.stderr.contains("service=imap") && r.stderr.contains("rip=192.0.2.7"),
        "{}",
        r.stderr
    );
}

#[test]
fn rejections_exit_1_without_running_the_reply() {
    let e = Env::new();
    let cfg = e.config("");
    for (user, pw, why) in [
        ("jdoe@example.org", "Wr0ng-pw-71", "wrong password"),
        ("jdoe@example.org", "", "empty password"),
        ("nobody@example.org", "secret1", "unknown user"),
        ("dup@example.org", "duppw", "two entries for one login"),
        ("*", "secret1", "wildcard login"),
        ("jdoe@example.org)(mail=*", "secret1", "filter injection"),
        ("*)(|(mail=*", "secret1", "filter injection"),
        ("jdoe@example.org\\", "secret1", "backslash"),
        (
            "star*@example.org",
            "Wr0ng-pw-72",
            "literal star, wrong password",
        ),
        ("", "secret1", "empty login"),
    ] {
        let r = e.login(&cfg, user, pw);
        assert_eq!(r.code, 1, "{why}: {r:?}");
        assert!(e.reply.env().is_none(), "{why}: reply program must not run");
        assert!(
            !pw.is_empty() && !r.stderr.contains(pw) || pw.is_empty(),
            "{why}: password logged"
        );
    }
}

#[test]
fn escaped_special_characters_match_only_themselves() {
    let e = Env::new();
    let cfg = e.config("");
    // The entry whose mail really contains '*' can log in; '*' matched literally.
    let r = e.login(&cfg, "star*@example.org", "starpw");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.reply.var("USER").as_deref(), Some("star*@example.org"));
}

#[test]
fn mixed_case_login_is_canonicalised() {
    let e = Env::new();
    let cfg = e.config("");
    let r = e.login(&cfg, "JDoe@Example.ORG", "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.reply.var("USER").as_deref(), Some("jdoe@example.org"));
}

#[test]
fn dn_with_special_characters_and_non_ascii_password() {
    let e = Env::new();
    let cfg = e.config("");
    let r = e.login(&cfg, "hans.mueller@example.org", HMUELLER_PW);
    assert_eq!(r.code, 0, "{r:?}");
    let r = e.login(&cfg, "hans.mueller@example.org", "passwort");
    assert_eq!(r.code, 1, "{r:?}");
}

#[test]
fn filter_with_and_without_placeholder() {
    let e = Env::new();
    // ANDed filter: a filter that excludes the user rejects it.
    let cfg = e.config("filter = \"(objectClass=organizationalRole)\"\n");
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 1);
    let cfg = e.config("filter = \"(objectClass=inetOrgPerson)\"\n");
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    // Placeholder filter: login by uid or mail.
    let cfg = e.config("filter = \"(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%s)))\"\n");
    // By uid, the entry's mail values (username_field) do not include the
    // login: refused with the fix, never USER=jdoe (one person, two users).
    let r = e.login(&cfg, "jdoe", "secret1");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("whose mail values do not include it: set provisioning.mail_field"),
        "{r:?}"
    );
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    assert_eq!(e.reply.var("USER").as_deref(), Some("jdoe@example.org"));
    // With mail_field, both logins are the same user.
    let cfg = e.config(
        "filter = \"(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%s)))\"\n\n[provisioning]\nmail_field = \"mail\"\n",
    );
    assert_eq!(e.login(&cfg, "JDoe", "secret1").code, 0);
    assert_eq!(e.reply.var("USER").as_deref(), Some("jdoe@example.org"));
    assert_eq!(
        e.login(&cfg, "j*", "secret1").code,
        1,
        "placeholder value must be escaped"
    );
}

#[test]
fn anonymous_search_versus_service_bind() {
    let e = Env::new();
    let anon_people = format!(
        "[ldap]\nhosts = \"127.0.0.1:{}\"\nbase_dn = \"{BASE}\"\n",
        e.slapd.port
    );
    // Anonymous may read only ou=public.
    let cfg = e.config_raw(&anon_people);
    assert_eq!(e.login(&cfg, "anon@example.org", "anonpw").code, 0);
    assert_eq!(
        e.login(&cfg, "jdoe@example.org", "secret1").code,
        1,
        "anonymous cannot see ou=people"
    );
    // The service account sees everyone.
    let cfg = e.config("");
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    // A wrong service password is a configuration problem: temporary, never "wrong password".
    let bad = format!(
        "[ldap]\nhosts = \"127.0.0.1:{}\"\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\nbind_password = \"nope\"\n",
        e.slapd.port
    );
    let cfg = e.config_raw(&bad);
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 111, "{r:?}");
    assert!(r.stderr.contains("bind_password"), "{}", r.stderr);
    let _ = READER_PW;
}

fn tls_section(e: &Env, mode: &str, port: u16, extra: &str) -> String {
    format!(
        "[ldap]\nhosts = \"localhost:{port}\"\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\n\
         bind_password = \"{READER_PW}\"\n{mode}\n{extra}\nconnect_timeout_ms = 1000\ntimeout_ms = 2000\n",
    )
    .replace("{ca}", &e.slapd.pki.ca.display().to_string())
    .replace("{other}", &e.slapd.pki.other_ca.display().to_string())
}

#[test]
fn tls_modes_verify_the_certificate() {
    let e = Env::new();
    let ldaps = e.slapd.ldaps_port;
    let plain = e.slapd.port;
    let cases: Vec<(String, u16, String, i32)> = vec![
        (
            "use_ssl = true".into(),
            ldaps,
            "ca_file = \"{ca}\"".into(),
            0,
        ),
        ("use_ssl = true".into(), ldaps, "".into(), 111),
        (
            "use_ssl = true".into(),
            ldaps,
            "ca_file = \"{other}\"".into(),
            111,
        ),
        (
            "use_ssl = true".into(),
            ldaps,
            "ignore_ssl_errors = true".into(),
            0,
        ),
        (
            "use_tls = true".into(),
            plain,
            "ca_file = \"{ca}\"".into(),
            0,
        ),
        ("use_tls = true".into(), plain, "".into(), 111),
        (
            "use_tls = true".into(),
            plain,
            "ca_file = \"{other}\"".into(),
            111,
        ),
        (
            "use_tls = true".into(),
            plain,
            "ignore_ssl_errors = true".into(),
            0,
        ),
        // LDAPS spoken to a plain port, and plain LDAP to the LDAPS port, fail as temporary.
        (
            "use_ssl = true".into(),
            plain,
            "ca_file = \"{ca}\"".into(),
            111,
        ),
    ];
    for (mode, port, extra, want) in cases {
        let cfg = e.config_raw(&tls_section(&e, &mode, port, &extra));
        let r = e.login(&cfg, "jdoe@example.org", "secret1");
        assert_eq!(r.code, want, "{mode} port {port} {extra}: {r:?}");
        // Never a "wrong password" for a TLS problem, and never a plain-text fallback.
        if want == 111 {
            assert!(r.stderr.contains("result=tempfail"), "{}", r.stderr);
        }
    }
    // Wrong password over TLS is still a rejection.
    let cfg = e.config_raw(&tls_section(
        &e,
        "use_ssl = true",
        ldaps,
        "ca_file = \"{ca}\"",
    ));
    assert_eq!(e.login(&cfg, "jdoe@example.org", "nope").code, 1);
}

#[test]
fn ldaptls_cacert_from_the_environment_is_trusted() {
    let e = Env::new();
    let cfg = e.config_raw(&tls_section(&e, "use_ssl = true", e.slapd.ldaps_port, ""));
    let ca = e.slapd.pki.ca.display().to_string();
    let r = checkpassword(
        &cfg,
        &creds("jdoe@example.org", "secret1"),
        &[("LDAPTLS_CACERT", &ca)],
        &e.reply,
    );
    assert_eq!(r.code, 0, "{r:?}");
}

/// `ca_only`: the admin's CA is the only trust anchor. The suite's CA stands in
/// for a system root (rustls-native-certs reads `SSL_CERT_FILE`); `ca_file`
/// names an unrelated CA. Without `ca_only` the "system root" still lets the
/// server in; with it, the login is a temporary failure (111).
#[test]
fn ca_only_trusts_the_ca_file_alone() {
    let e = Env::new();
    let system = e.slapd.pki.ca.display().to_string();
    let ldaps = e.slapd.ldaps_port;
    for (extra, want) in [
        ("ca_file = \"{other}\"", 0),
        ("ca_file = \"{other}\"\nca_only = true", 111),
        ("ca_file = \"{ca}\"\nca_only = true", 0),
    ] {
        let cfg = e.config_raw(&tls_section(&e, "use_ssl = true", ldaps, extra));
        let r = checkpassword(
            &cfg,
            &creds("jdoe@example.org", "secret1"),
            &[("SSL_CERT_FILE", &system)],
            &e.reply,
        );
        assert_eq!(r.code, want, "{extra}: {r:?}");
    }
    // ca_only without a ca_file is a configuration error naming the key.
    let cfg = e.config_raw(&tls_section(&e, "use_ssl = true", ldaps, "ca_only = true"));
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 111, "{r:?}");
    assert!(r.stderr.contains("ldap.ca_only"), "{}", r.stderr);
}

#[test]
fn host_fallback_on_refused_and_silent_hosts() {
    let e = Env::new();
    let silent = SilentServer::start();
    let refused = free_port();
    let section = |hosts: &str| {
        format!(
            "[ldap]\nhosts = \"{hosts}\"\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\n\
             bind_password = \"{READER_PW}\"\nconnect_timeout_ms = 500\ntimeout_ms = 500\nhost_retry_seconds = 60\n"
        )
    };
    let good = format!("127.0.0.1:{}", e.slapd.port);
    // Refused first, then the good host.
    let cfg = e.config_raw(&section(&format!("127.0.0.1:{refused}, {good}")));
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&format!("host={good}")), "{}", r.stderr);

    // Silent first (accepts TCP, never answers): the operation timeout moves on.
    let _ = std::fs::remove_file(e.path().join("host-health.json"));
    let cfg = e.config_raw(&section(&format!("127.0.0.1:{}, {good}", silent.port)));
    let t = std::time::Instant::now();
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    let first = t.elapsed();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        first >= std::time::Duration::from_millis(400),
        "the first login pays the timeout"
    );
    // The silent host is remembered: the next login asks the good host first.
    let health = std::fs::read_to_string(e.path().join("host-health.json")).unwrap();
    assert!(
        health.contains(&format!("127.0.0.1:{}", silent.port)),
        "{health}"
    );
    let t = std::time::Instant::now();
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        t.elapsed() < first,
        "the second login must not wait for the silent host again"
    );

    // A wrong password on the first host is final: the second host is not asked.
    let cfg = e.config_raw(&section(&format!("{good}, 127.0.0.1:{refused}")));
    let r = e.login(&cfg, "jdoe@example.org", "wrong");
    assert_eq!(r.code, 1, "{r:?}");
}

#[test]
fn all_hosts_down_is_temporary() {
    let e = Env::new();
    let silent = SilentServer::start();
    let section = format!(
        "[ldap]\nhosts = [\"127.0.0.1:{}\", \"127.0.0.1:{}\", \"no-such-host.invalid\"]\nbase_dn = \"{BASE}\"\n\
         connect_timeout_ms = 300\ntimeout_ms = 300\n",
        free_port(),
        silent.port
    );
    let cfg = e.config_raw(&section);
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 111, "{r:?}");
    assert!(
        r.stderr.contains("no directory host usable"),
        "{}",
        r.stderr
    );
    // And a stopped server gives the same, for lookups too.
    let mut e = e;
    let cfg = e.config("");
    e.slapd.stop();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 111);
    let r = lookup(&cfg, "jdoe@example.org", &e.reply);
    assert_eq!(r.code, 111, "{r:?}");
}

#[test]
fn lookups_answer_found_or_unknown() {
    let e = Env::new();
    let cfg = e.config("");
    let r = checkpassword(
        &cfg,
        &creds("jdoe@example.org", ""),
        &[("AUTHORIZED", "1"), ("SERVICE", "lmtp")],
        &e.reply,
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(e.reply.var("AUTHORIZED").as_deref(), Some("2"));
    assert_eq!(e.reply.var("USER").as_deref(), Some("jdoe@example.org"));
    assert_eq!(
        e.reply.var("userdb_home").as_deref(),
        Some("/var/vmail/example.org/jdoe")
    );
    let r = lookup(&cfg, "nobody@example.org", &e.reply);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(e.reply.env().is_none());
}

#[test]
fn malformed_fd3_is_misuse() {
    let e = Env::new();
    let cfg = e.config("");
    for input in [
        b"no-nul-here".to_vec(),
        b"user\0password".to_vec(),
        vec![b'a'; 600],
        {
            let mut v = creds("jdoe@example.org", "secret1");
            v.extend(std::iter::repeat_n(b'x', 600));
            v
        },
    ] {
        let r = checkpassword(&cfg, &input, &[], &e.reply);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(
            r.stderr.contains("misuse"),
            "a log line says why: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // Closed fd 3 altogether.
    let out = std::process::Command::new(crate::support::bin())
        .arg("-c")
        .arg(&cfg)
        .arg("checkpassword")
        .arg(&e.reply.path)
        .arg(&e.reply.out)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn bad_config_is_temporary() {
    let e = Env::new();
    let mut cases = vec![
        (
            "unknown key",
            format!("{}bogus_key = 1\n", e.slapd.ldap_section()),
        ),
        ("no hosts", "[ldap]\nbase_dn = \"x\"\n".to_owned()),
        ("bad toml", "[ldap\n".to_owned()),
    ];
    cases.push((
        "ssl with tls",
        format!("{}use_ssl = true\nuse_tls = true\n", e.slapd.ldap_section()),
    ));
    for (why, text) in cases {
        let cfg = write_config(e.path(), "bad.toml", &text);
        let r = e.login(&cfg, "jdoe@example.org", "secret1");
        assert_eq!(r.code, 111, "{why}: {r:?}");
        assert!(
            r.stderr.contains("bad.toml"),
            "{why}: the error names the file: {}",
            r.stderr
        );
    }
    let missing = e.path().join("missing.toml");
    assert_eq!(e.login(&missing, "jdoe@example.org", "secret1").code, 111);
}

#[test]
fn world_readable_config_with_password_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let e = Env::new();
    let cfg = e.config("");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 111, "{r:?}");
    assert!(r.stderr.contains("chmod o-r"), "{}", r.stderr);
    // With the password in a private file, a readable config is fine.
    let pw = e.path().join("bindpw");
    std::fs::write(&pw, format!("{READER_PW}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "state_dir = \"{}\"\n[ldap]\nhosts = \"127.0.0.1:{}\"\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\nbind_password_file = \"{}\"\n",
        e.path().display(),
        e.slapd.port,
        pw.display()
    );
    let cfg = write_config(e.path(), "filepw.toml", &text);
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
}

#[test]
fn a_hung_server_is_cut_off_by_the_login_deadline() {
    let e = Env::new();
    let silent = SilentServer::start();
    // Operation timeouts far beyond the login's deadline: the deadline must win.
    let section = format!(
        "login_timeout_ms = 300\n[ldap]\nhosts = \"127.0.0.1:{}\"\nbase_dn = \"{BASE}\"\n\
         connect_timeout_ms = 60000\ntimeout_ms = 60000\n",
        silent.port
    );
    let cfg = write_config(
        e.path(),
        "hung.toml",
        &format!("state_dir = \"{}\"\n{section}", e.path().display()),
    );
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 111, "{r:?}");
    assert!(
        r.stderr.contains("login time limit") || r.stderr.contains("hard time limit"),
        "{}",
        r.stderr
    );
}

/// The config and its secret files are judged on the descriptor that is read:
/// a group-writable or foreign-owned file, or a FIFO planted under the name,
/// is refused with the command that fixes it (before: 0660, 0620 and a file
/// owned by `nobody` were accepted, and a FIFO hung the login).
#[test]
fn config_and_secret_files_writable_by_others_or_foreign_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let e = Env::new();
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let cfg = e.config("");
    for (m, fix) in [
        (0o660, "chmod go-w"),
        (0o620, "chmod go-w"),
        (0o602, "chmod go-w"),
    ] {
        mode(&cfg, m);
        let r = e.login(&cfg, "jdoe@example.org", "secret1");
        assert_eq!(r.code, 111, "mode {m:o}: {r:?}");
        assert!(r.stderr.contains(fix), "mode {m:o}: {}", r.stderr);
    }
    mode(&cfg, 0o600);
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);

    // Owned by someone else (only meaningful when the tests run as root).
    if crate::support::running_as_root() {
        std::os::unix::fs::chown(&cfg, Some(65534), None).unwrap();
        let r = e.login(&cfg, "jdoe@example.org", "secret1");
        assert_eq!(r.code, 111, "{r:?}");
        assert!(r.stderr.contains("chown root"), "{}", r.stderr);
        std::os::unix::fs::chown(&cfg, Some(0), None).unwrap();
    }

    // A FIFO in place of the config: refused at once, not a hang.
    let fifo = e.path().join("fifo.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let r = e.login(&fifo, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 111, "{r:?}");
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);

    // A group-writable password file.
    let pw = e.path().join("bindpw-gw");
    std::fs::write(&pw, format!("{READER_PW}\n")).unwrap();
    mode(&pw, 0o660);
    let text = format!(
        "state_dir = \"{}\"\n[ldap]\nhosts = \"127.0.0.1:{}\"\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\nbind_password_file = \"{}\"\n",
        e.path().display(),
        e.slapd.port,
        pw.display()
    );
    let cfg = write_config(e.path(), "gwpw.toml", &text);
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 111, "{r:?}");
    assert!(
        r.stderr.contains("bind_password_file") && r.stderr.contains("chmod go-w"),
        "{}",
        r.stderr
    );
    mode(&pw, 0o640);
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
}

#[test]
fn openldap_password_policy_names_a_locked_account() {
    // slapd with the ppolicy overlay: two wrong passwords lock an account;
    // ppolicy_use_lockout makes slapd say so in its response control.
    let dir = TempDir::new().unwrap();
    let ldif = format!(
        "{}\ndn: ou=policies,dc=example,dc=org\nobjectClass: organizationalUnit\nou: policies\n\n\
         dn: cn=default,ou=policies,dc=example,dc=org\nobjectClass: person\nobjectClass: pwdPolicy\n\
         cn: default\nsn: default\npwdAttribute: userPassword\npwdLockout: TRUE\npwdMaxFailure: 2\n",
        crate::support::slapd::BASE_LDIF
    );
    let slapd = Slapd::start_with(
        dir.path(),
        &ldif,
        "moduleload ppolicy\noverlay ppolicy\nppolicy_default \"cn=default,ou=policies,dc=example,dc=org\"\n\
         ppolicy_use_lockout\n",
    );
    let e = Env {
        reply: StubReply::create(dir.path()),
        dir,
        slapd,
    };
    let cfg = e.config("");
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    for _ in 0..2 {
        let r = e.login(&cfg, "jdoe@example.org", "Wr0ng-pw-1");
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains("reason=\"wrong password\""), "{r:?}");
    }
    // Locked: the right password is refused, and the policy's reason named.
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("account locked out (password policy)"),
        "{r:?}"
    );
    // Another user is not affected.
    assert_eq!(e.login(&cfg, "anon@example.org", "anonpw").code, 0);
}
