//! mailcow's whole passdb (`[mailcow] passdb = "full"`, the default with a
//! database), in mailcow's order (`mailcowauth.php`: `apppass_login()`, then
//! `user_login()`, in mailcow's `data/web/inc/functions.auth.inc.php`): app
//! passwords, the mailbox's state and mailcow-SQL passwords are decided
//! before any LDAP bind. Each case counts the operations slapd saw (its
//! `stats` log): a login decided without the directory costs it nothing.
//!
//! The hashes are made by Dovecot's own `doveadm pw`, the tool whose formats
//! mailcow's `verify_hash()` reads.

use crate::support::mariadb::Db;
use crate::support::slapd::{Ops, BASE, READER_DN, READER_PW};
use crate::support::{checkpassword, creds, require, run_ok, write_config, Run, Slapd, StubReply};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tempfile::TempDir;

/// `doveadm pw -s SCHEME -p PASSWORD` (bcrypt with mailcow's cost, PHP's 10).
pub fn dovecot_hash(scheme: &str, password: &str) -> String {
    require("doveadm", "dovecot-core");
    let mut cmd = Command::new("doveadm");
    cmd.args(["pw", "-s", scheme, "-p", password]);
    if scheme == "BLF-CRYPT" {
        cmd.args(["-r", "10"]);
    }
    let out = run_ok(&mut cmd);
    let h = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(h.starts_with(&format!("{{{scheme}}}")), "{h}");
    h
}

/// The schemes of mailcow-SQL passwords tested, with SSHA256/SSHA512 also in
/// mailcow's own shape (a hex salt, `hash_password()`).
const SCHEMES: &[&str] = &[
    "BLF-CRYPT",
    "SSHA",
    "SSHA256",
    "SSHA512",
    "SHA512-CRYPT",
    "SHA256-CRYPT",
    "MD5-CRYPT",
    "ARGON2I",
    "ARGON2ID",
    "PLAIN-MD5",
    "CLEARTEXT",
    "PLAIN",
    "SHA256",
    "SHA512",
    // Dovecot's own PBKDF2 ($1$salt$rounds$hex, PBKDF2-HMAC-SHA1) and MD4, as
    // mailcow's verify_hash() reads them.
    "PBKDF2",
    "PLAIN-MD4",
];

struct Env {
    dir: TempDir,
    slapd: Slapd,
    db: Db,
    reply: StubReply,
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

impl Env {
    fn new() -> Env {
        let dir = TempDir::new().unwrap();
        let slapd = Slapd::start_counting(dir.path());
        let db = Db::new();
        db.sql("INSERT INTO domain (domain, active) VALUES ('example.org', 1), ('off.org', 0);");
        let reply = StubReply::create(dir.path());
        Env {
            dir,
            slapd,
            db,
            reply,
        }
    }

    fn mailbox(&self, user: &str, authsource: &str, active: i64, password: &str, attrs: &str) {
        let (local, domain) = user.split_once('@').unwrap();
        self.db.sql(&format!(
            "INSERT INTO mailbox (username, password, name, local_part, domain, attributes, authsource, active) \
             VALUES ('{user}', {}, 'N', '{local}', '{domain}', '{attrs}', '{authsource}', {active});",
            sql_str(password)
        ));
    }

    /// An app password; `flags`: the per-protocol columns set to 0.
    fn app_password(&self, mailbox: &str, hash: &str, active: i64, off: &[&str]) -> i64 {
        let domain = mailbox.split_once('@').unwrap().1;
        let sets: String = off.iter().map(|f| format!(", {f}_access = 0")).collect();
        self.db.sql(&format!(
            "INSERT INTO app_passwd (name, mailbox, domain, password, active) VALUES ('app', '{mailbox}', '{domain}', {}, {active});\
             UPDATE app_passwd SET id = id{sets} WHERE id = LAST_INSERT_ID();",
            sql_str(hash)
        ));
        self.db
            .value(&format!(
                "SELECT MAX(id) FROM app_passwd WHERE mailbox = '{mailbox}'"
            ))
            .parse()
            .unwrap()
    }

    fn config(&self, extra: &str) -> PathBuf {
        self.config_with("config.toml", &self.slapd.ldap_section(), extra)
    }

    /// [`Env::config`] with another `[ldap]` section, in file `name`.
    fn config_with(&self, name: &str, ldap: &str, extra: &str) -> PathBuf {
        let text = format!(
            "state_dir = \"{}\"\n{ldap}\n{}\n[provisioning]\nlogin_provisioning = false\n\n{extra}\n",
            self.dir.path().display(),
            self.db.section(),
        );
        write_config(self.dir.path(), name, &text)
    }

    /// serve with this slapd and database, mailcow's userdb fields, the
    /// shared secret and `mailcow` settings `extra`: the running serve and
    /// its HTTP port.
    fn serve(&self, secret: &Path, extra: &str) -> (crate::support::serve::Serve, u16) {
        use crate::support::dovecot::{MAIL_GID, MAIL_UID};
        use crate::support::serve::Serve;
        let root = self.dir.path();
        let state = root.join("serve-state");
        std::fs::create_dir_all(&state).unwrap();
        let (section, port, socket) = Serve::section(
            root,
            &format!("http_secret_file = \"{}\"", secret.display()),
        );
        let text = format!(
            "state_dir = \"{}\"\nlog_target = \"stderr\"\n{}\n{}\n[provisioning]\nlogin_provisioning = false\n\
             [dovecot]\nuid = \"{MAIL_UID}\"\ngid = \"{MAIL_GID}\"\nhome = \"{}/dovecot/mail/%d/%n\"\n\
             [mailcow]\n{extra}\n{section}",
            state.display(),
            self.slapd.ldap_section(),
            self.db.section(),
            root.display(),
        );
        let cfg = write_config(root, "serve.toml", &text);
        (Serve::start(&cfg, port, socket), port)
    }

    /// What slapd saw since `before`.
    fn ops_since(&self, before: &Ops) -> Ops {
        let after = self.slapd.binds();
        Ops {
            user: after.user - before.user,
            user_failed: after.user_failed - before.user_failed,
            service: after.service - before.service,
            other: after.other - before.other,
        }
    }

    /// One checkpassword login: its result and what slapd saw meanwhile.
    fn login(&self, cfg: &Path, user: &str, pw: &str, service: &str) -> (Run, Ops) {
        let before = self.slapd.binds();
        let r = checkpassword(
            cfg,
            &creds(user, pw),
            &[("SERVICE", service), ("TCPREMOTEIP", "192.0.2.7")],
            &self.reply,
        );
        let after = self.slapd.binds();
        let d = Ops {
            user: after.user - before.user,
            user_failed: after.user_failed - before.user_failed,
            service: after.service - before.service,
            other: after.other - before.other,
        };
        (r, d)
    }

    /// A login that must be decided with no LDAP traffic at all; returns its exit code.
    fn quiet(&self, cfg: &Path, user: &str, pw: &str, service: &str) -> i32 {
        let (r, ops) = self.login(cfg, user, pw, service);
        assert_eq!(
            ops.total(),
            0,
            "{user} / {service}: the directory was asked: {ops:?}\n{r:?}"
        );
        // Shown with a failing assertion on the code.
        println!("{user} / {service}: {r:?}");
        r.code
    }
}

#[test]
fn app_passwords_are_decided_without_the_directory() {
    let e = Env::new();
    let cfg = e.config("");
    let u = "jdoe@example.org";
    // pop3_access off for the mailbox: its own password may not use POP3;
    // an app password with POP3 on may (apppass_login() does not read the
    // mailbox's flags).
    e.mailbox(u, "ldap", 1, "", r#"{"pop3_access":"0"}"#);
    let blf = e.app_password(u, &dovecot_hash("BLF-CRYPT", "app-Blf-1"), 1, &[]);
    let _imap_only = e.app_password(
        u,
        &dovecot_hash("SSHA256", "app-Ssha256-2"),
        1,
        &["smtp", "pop3", "sieve", "dav", "eas"],
    );
    let _ = e.app_password(u, &dovecot_hash("SSHA512", "app-Ssha512-3"), 1, &["imap"]);
    let _ = e.app_password(u, &dovecot_hash("SSHA", "app-Ssha-4"), 1, &[]);
    let _ = e.app_password(u, &dovecot_hash("BLF-CRYPT", "app-Off-5"), 0, &[]);
    // Another mailbox's app password.
    e.mailbox(
        "mc@example.org",
        "mailcow",
        1,
        &dovecot_hash("BLF-CRYPT", "mc-own-6"),
        "{}",
    );
    e.app_password(
        "mc@example.org",
        &dovecot_hash("BLF-CRYPT", "mc-app-7"),
        1,
        &[],
    );

    assert_eq!(e.quiet(&cfg, u, "app-Blf-1", "imap"), 0);
    assert_eq!(e.reply.var("USER").as_deref(), Some(u));
    // The sasl_log row, as set_sasl_log() writes it.
    assert_eq!(
        e.db.sql("SELECT username, real_rip, service, app_password FROM sasl_log")
            .trim(),
        format!("{u}\t192.0.2.7\timap\t{blf}")
    );
    assert_eq!(e.quiet(&cfg, u, "app-Blf-1", "smtp"), 0);
    assert_eq!(
        e.quiet(&cfg, u, "app-Blf-1", "pop3"),
        0,
        "mailbox pop3_access 0, app password allows"
    );
    assert_eq!(e.quiet(&cfg, u, "app-Ssha256-2", "imap"), 0);
    assert_eq!(
        e.quiet(&cfg, u, "app-Ssha256-2", "smtp"),
        1,
        "smtp_access off"
    );
    assert_eq!(
        e.quiet(&cfg, u, "app-Ssha256-2", "submission"),
        1,
        "submission is smtp"
    );
    assert_eq!(
        e.quiet(&cfg, u, "app-Ssha256-2", "managesieve"),
        1,
        "managesieve is sieve"
    );
    assert_eq!(
        e.quiet(&cfg, u, "app-Ssha512-3", "imap"),
        1,
        "imap_access off"
    );
    assert_eq!(e.quiet(&cfg, u, "app-Ssha512-3", "sieve"), 0);
    assert_eq!(e.quiet(&cfg, u, "app-Ssha-4", "imap"), 0);
    assert_eq!(
        e.quiet(&cfg, u, "app-Off-5", "imap"),
        1,
        "inactive app password"
    );
    // The mailbox's own password over POP3: pop3_access 0, refused before the bind.
    assert_eq!(e.quiet(&cfg, u, "secret1", "pop3"), 1);
    // Another mailbox's app password for a mailcow mailbox: no bind either.
    e.mailbox(
        "mc2@example.org",
        "mailcow",
        1,
        &dovecot_hash("SSHA256", "mc2-own"),
        "{}",
    );
    assert_eq!(e.quiet(&cfg, "mc2@example.org", "mc-app-7", "imap"), 1);
    assert_eq!(e.quiet(&cfg, "mc@example.org", "mc-app-7", "imap"), 0);
    assert_eq!(
        e.db.value("SELECT app_password FROM sasl_log WHERE username = 'mc@example.org'"),
        e.db.value("SELECT id FROM app_passwd WHERE mailbox = 'mc@example.org'")
    );

    // The LDAP password: one bind, accepted; a wrong one (also another
    // mailbox's app password, which is no app password of this one): one
    // failed bind each, never two.
    let (r, ops) = e.login(&cfg, u, "secret1", "imap");
    assert_eq!(
        (r.code, ops.user, ops.user_failed),
        (0, 1, 0),
        "{r:?} {ops:?}"
    );
    assert_eq!(
        e.db.value(&format!(
            "SELECT app_password FROM sasl_log WHERE username = '{u}' AND service = 'imap'"
        )),
        "0"
    );
    for wrong in ["Wr0ng-pw", "mc-app-7"] {
        let (r, ops) = e.login(&cfg, u, wrong, "imap");
        assert_eq!(
            (r.code, ops.user, ops.user_failed),
            (1, 1, 1),
            "{r:?} {ops:?}"
        );
    }

    // ldap-only: today's behaviour, an app password goes to the directory.
    let cfg = e.config("[mailcow]\npassdb = \"ldap-only\"\n");
    let (r, ops) = e.login(&cfg, u, "app-Blf-1", "imap");
    assert_eq!((r.code, ops.user_failed), (1, 1), "{r:?} {ops:?}");
}

#[test]
fn mailbox_state_is_checked_before_the_bind() {
    let e = Env::new();
    let cfg = e.config("");
    // Right LDAP passwords all: the refusal is the mailbox's state, and costs no bind.
    e.mailbox("jdoe@example.org", "ldap", 0, "", "{}");
    e.mailbox("nomail@example.org", "ldap", 2, "", "{}");
    e.mailbox("jdoe@off.org", "ldap", 1, "", "{}");
    e.mailbox(
        "anon@example.org",
        "ldap",
        1,
        "",
        r#"{"pop3_access":"0","imap_access":"1"}"#,
    );
    e.mailbox("kc@example.org", "keycloak", 1, "", "{}");
    e.mailbox("dup@example.org", "ldap", 1, "", "{}");
    e.db.sql("UPDATE mailbox SET kind = 'location' WHERE username = 'dup@example.org'");
    e.mailbox("oidc@example.org", "generic-oidc", 1, "", "{}");
    assert_eq!(
        e.quiet(&cfg, "jdoe@example.org", "secret1", "imap"),
        1,
        "inactive"
    );
    assert_eq!(
        e.quiet(&cfg, "nomail@example.org", "nomailpw", "imap"),
        1,
        "active = 2"
    );
    assert_eq!(
        e.quiet(&cfg, "jdoe@off.org", "secret1", "imap"),
        1,
        "inactive domain"
    );
    assert_eq!(
        e.quiet(&cfg, "anon@example.org", "anonpw", "pop3"),
        1,
        "pop3_access 0"
    );
    assert_eq!(e.quiet(&cfg, "kc@example.org", "x", "imap"), 1, "keycloak");
    assert_eq!(
        e.quiet(&cfg, "dup@example.org", "duppw", "imap"),
        1,
        "a resource (kind location)"
    );
    assert_eq!(
        e.quiet(&cfg, "oidc@example.org", "x", "imap"),
        1,
        "generic-oidc"
    );
    // No mailbox and no login provisioning: unknown, the directory is not asked.
    assert_eq!(
        e.quiet(&cfg, "hans.mueller@example.org", "x", "imap"),
        1,
        "no mailbox"
    );
    assert_eq!(e.count_sasl(), 0);
    // The same over IMAP for the allowed service: one bind.
    let (r, ops) = e.login(&cfg, "anon@example.org", "anonpw", "imap");
    assert_eq!(
        (r.code, ops.user, ops.user_failed),
        (0, 1, 0),
        "{r:?} {ops:?}"
    );
}

impl Env {
    fn count_sasl(&self) -> usize {
        self.db
            .value("SELECT COUNT(*) FROM sasl_log")
            .parse()
            .unwrap()
    }
}

#[test]
fn mailcow_sql_passwords_in_every_scheme() {
    let e = Env::new();
    let cfg = e.config("");
    for (i, scheme) in SCHEMES.iter().enumerate() {
        let user = format!("sql{i}@example.org");
        let pw = format!("Sql-{scheme}-pw");
        e.mailbox(&user, "mailcow", 1, &dovecot_hash(scheme, &pw), "{}");
        assert_eq!(
            e.quiet(&cfg, &user, &pw, "imap"),
            0,
            "{scheme}: right password"
        );
        assert_eq!(
            e.quiet(&cfg, &user, &format!("{pw}x"), "imap"),
            1,
            "{scheme}: wrong password"
        );
    }
    // The userdb answers for a mailcow mailbox too (delivery, doveadm).
    let r = crate::support::lookup(&cfg, "sql0@example.org", &e.reply);
    assert_eq!(r.code, 2, "lookup of a mailcow mailbox: {r:?}");
    let only = e.config("[mailcow]\npassdb = \"ldap-only\"\n");
    let r = crate::support::lookup(&only, "sql0@example.org", &e.reply);
    assert_eq!(r.code, 3, "ldap-only: not ours: {r:?}");
    let cfg = e.config("");
    // mailcow's own SSHA256 / SSHA512 (hash_password(): a 16-hex-digit salt).
    for (n, scheme, hash) in [
        // base64(sha256("pw-mc" . "0123456789abcdef") . "0123456789abcdef")
        (
            100,
            "SSHA256",
            mailcow_ssha::<sha2::Sha256>("pw-mc", "0123456789abcdef"),
        ),
        (
            101,
            "SSHA512",
            mailcow_ssha::<sha2::Sha512>("pw-mc", "0123456789abcdef"),
        ),
    ] {
        let user = format!("sql{n}@example.org");
        e.mailbox(&user, "mailcow", 1, &format!("{{{scheme}}}{hash}"), "{}");
        assert_eq!(
            e.quiet(&cfg, &user, "pw-mc", "smtp"),
            0,
            "{scheme} as mailcow writes it"
        );
        assert_eq!(e.quiet(&cfg, &user, "pw-mC", "smtp"), 1, "{scheme} wrong");
    }
}

fn mailcow_ssha<D: sha2::Digest>(pw: &str, salt: &str) -> String {
    use base64::Engine;
    let mut d = D::new();
    d.update(pw.as_bytes());
    d.update(salt.as_bytes());
    let mut raw = d.finalize().to_vec();
    raw.extend_from_slice(salt.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The recommended chain, Dovecot 2.3 + the shipped Lua passdb
/// (`contrib/dovecot-lua/dovecot-2.3.conf`) + serve with mailcow's database:
/// every password goes to serve once. A wrong LDAP password costs exactly one
/// failed bind; an app password and a mailcow-SQL password none.
#[test]
fn one_bind_per_login_through_dovecot_lua_and_serve() {
    use crate::serve_e2e::{install_lua, lua_block_23, write_secret};
    use crate::support::clients::imap_login;
    use crate::support::dovecot::Dovecot;
    require("dovecot", "dovecot-core");
    let e = Env::new();
    let root = e.dir.path().to_owned();
    let u = "jdoe@example.org";
    e.mailbox(u, "ldap", 1, "", "{}");
    e.app_password(u, &dovecot_hash("BLF-CRYPT", "chain-App-1"), 1, &[]);
    e.mailbox(
        "local@example.org",
        "mailcow",
        1,
        &dovecot_hash("SHA512-CRYPT", "chain-Sql-2"),
        "{}",
    );

    let secret = write_secret(&root);
    let (serve, port) = e.serve(&secret, "");
    let lua = install_lua(&root);
    let block = lua_block_23(&lua, port, &secret);
    let dovecot = Dovecot::start_with(&root, &e.slapd.ldap_section(), |_| block);
    let imap = dovecot.imap_port;

    let step = |user: &str, pw: &str, ok: bool| -> Ops {
        let before = e.slapd.binds();
        let r = imap_login(imap, user, pw);
        assert_eq!(
            r.starts_with("OK"),
            ok,
            "{user}: {r}\n{}\n{}",
            dovecot.log(),
            serve.log_text()
        );
        let after = e.slapd.binds();
        Ops {
            user: after.user - before.user,
            user_failed: after.user_failed - before.user_failed,
            service: after.service - before.service,
            other: after.other - before.other,
        }
    };
    let ops = step(u, "secret1", true);
    assert_eq!(
        (ops.user, ops.user_failed),
        (1, 0),
        "LDAP password: {ops:?}"
    );
    let ops = step(u, "Wr0ng-chain-3", false);
    assert_eq!(
        (ops.user, ops.user_failed),
        (1, 1),
        "wrong password: one failed bind, {ops:?}"
    );
    let ops = step(u, "chain-App-1", true);
    assert_eq!(ops.total(), 0, "app password: {ops:?}");
    let ops = step("local@example.org", "chain-Sql-2", true);
    assert_eq!(ops.total(), 0, "mailcow-SQL password: {ops:?}");
    let ops = step("local@example.org", "chain-Sql-x", false);
    assert_eq!(ops.total(), 0, "wrong mailcow-SQL password: {ops:?}");
    // SMTP AUTH as Postfix asks it (Cyrus SASL on serve's saslauthd socket,
    // service "smtp"): the app password and the SQL password, no bind; the
    // LDAP password, one.
    let sasl = |user: &str, pw: &str| -> (String, Ops) {
        let before = e.slapd.binds();
        let r = serve.sasl(user, pw, "smtp", "").unwrap_or_default();
        let after = e.slapd.binds();
        (
            r,
            Ops {
                user: after.user - before.user,
                user_failed: after.user_failed - before.user_failed,
                service: after.service - before.service,
                other: after.other - before.other,
            },
        )
    };
    let (r, ops) = sasl(u, "chain-App-1");
    assert!(r.starts_with("OK"), "smtp, app password: {r}");
    assert_eq!(ops.total(), 0, "smtp, app password: {ops:?}");
    let (r, ops) = sasl("local@example.org", "chain-Sql-2");
    assert!(r.starts_with("OK"), "smtp, mailcow-SQL password: {r}");
    assert_eq!(ops.total(), 0, "smtp, mailcow-SQL password: {ops:?}");
    let (r, ops) = sasl(u, "secret1");
    assert!(r.starts_with("OK"), "smtp, LDAP password: {r}");
    assert_eq!(
        (ops.user, ops.user_failed),
        (1, 0),
        "smtp, LDAP password: {ops:?}"
    );
    let (r, ops) = sasl(u, "Wr0ng-smtp-4");
    assert!(r.starts_with("NO"), "smtp, wrong password: {r}");
    assert_eq!(
        (ops.user, ops.user_failed),
        (1, 1),
        "smtp, wrong password: {ops:?}"
    );
    e.db.sql("DELETE FROM sasl_log WHERE service = 'smtp'");

    // The sasl_log rows serve wrote, as mailcow's PHP would have: one per
    // (service, real_rip, username), the last login's (jdoe's app password).
    assert_eq!(
        e.db.sql(
            "SELECT username, real_rip, service, app_password > 0 FROM sasl_log ORDER BY username"
        )
        .trim(),
        format!("{u}\t127.0.0.1\timap\t1\nlocal@example.org\t127.0.0.1\timap\t0")
    );
}

/// The chain recommended for mailcow-dockerized (`contrib/mailcow/`): serve's
/// passdb first (the shipped passdb.conf and extra.conf), then mailcow's own
/// passdbs as its dovecot.conf has them, with a stand-in for passwd-verify.lua
/// and mailcowauth.php that binds to slapd for jdoe's passwords as mailcow's
/// `user_login()` does. serve's refusals are final (`result_failure =
/// return-fail`): a wrong LDAP password costs exactly one failed bind and
/// mailcow's PHP is not asked; "not ours" (a keycloak mailbox) goes on to
/// mailcow's passdbs (the script's PASSDB_RESULT_NEXT), and so does every
/// login while serve is down.
///
/// With the former config (`result_failure = continue`) the wrong password
/// went on to mailcow's two passwd-verify.lua passdbs: three failed binds and
/// two requests to mailcow's PHP per attempt.
#[test]
fn mailcow_chain_wrong_password_costs_one_bind() {
    use crate::serve_e2e::{
        mailcow_chain, write_secret, MailcowEndpoint, KC_PW, KC_USER, LOCAL_PW, LOCAL_USER,
    };
    use crate::support::clients::imap_login;
    use crate::support::dovecot::Dovecot;
    require("dovecot", "dovecot-core");
    let e = Env::new();
    let root = e.dir.path().to_owned();
    let u = "jdoe@example.org";
    e.mailbox(u, "ldap", 1, "", "{}");
    e.mailbox(KC_USER, "keycloak", 1, "", "{}");
    let secret = write_secret(&root);
    let (mut serve, port) = e.serve(&secret, "");
    let endpoint = MailcowEndpoint::start_binding(format!("ldap://127.0.0.1:{}", e.slapd.port));
    let block = mailcow_chain(&root, port, &secret, endpoint.port);
    let dovecot = Dovecot::start_with(&root, &e.slapd.ldap_section(), |_| block);
    let imap = dovecot.imap_port;
    // One IMAP login: (accepted, binds at slapd, requests to mailcow's PHP).
    let step = |user: &str, pw: &str| -> (bool, Ops, usize) {
        let (before, asked) = (e.slapd.binds(), endpoint.count());
        let r = imap_login(imap, user, pw);
        let ops = e.ops_since(&before);
        println!("{user}: {r} {ops:?}");
        (r.starts_with("OK"), ops, endpoint.count() - asked)
    };
    let log = |s: &crate::support::serve::Serve| format!("{}\n{}", dovecot.log(), s.log_text());

    for attempt in ["Wr0ng-mc-1", "Wr0ng-mc-2", "Wr0ng-mc-3"] {
        let (ok, ops, asked) = step(u, attempt);
        assert!(!ok, "{}", log(&serve));
        assert_eq!(
            (ops.user, ops.user_failed, asked),
            (1, 1, 0),
            "wrong LDAP password: exactly one failed bind (serve's) and mailcow's PHP \
             not asked; got {ops:?}, mailcow asked {asked} times\n{}",
            log(&serve)
        );
    }
    let (ok, ops, asked) = step(u, "secret1");
    assert!(ok, "LDAP password: {}", log(&serve));
    assert_eq!((ops.user, ops.user_failed, asked), (1, 0, 0), "{ops:?}");

    // Not ours: serve never binds, mailcow's passdb decides.
    let (ok, ops, asked) = step(KC_USER, KC_PW);
    assert!(
        ok,
        "keycloak mailbox through mailcow's passdb: {}",
        log(&serve)
    );
    assert_eq!((ops.total(), asked), (0, 1), "keycloak: {ops:?}");
    let (ok, ops, asked) = step(KC_USER, "Wr0ng-kc");
    assert!(!ok);
    assert_eq!(ops.total(), 0, "keycloak, wrong: {ops:?}");
    assert!(asked >= 1, "keycloak, wrong: mailcow's passdb must decide");

    // serve down: mailcow's passdb decides alone (its PHP binds for jdoe).
    serve.stop();
    let (ok, _, asked) = step(LOCAL_USER, LOCAL_PW);
    assert!(ok, "mailcow mailbox while serve is down: {}", log(&serve));
    assert_eq!(asked, 1);
    let (ok, ops, asked) = step(u, "secret1");
    assert!(ok, "LDAP password while serve is down: {}", log(&serve));
    assert_eq!((ops.user, ops.user_failed, asked), (1, 0, 1), "{ops:?}");
    let (ok, ..) = step(u, "Wr0ng-mc-4");
    assert!(!ok);
}

/// serve's answers to a passdb chain (HTTP, as the Lua passdb asks): a
/// refusal serve decided is final (`{"success":false}`), one another passdb
/// may still accept says `"not_ours": true` — a keycloak mailbox, a login from
/// SOGo's address (`mailcow.sogo_address`, never tried against LDAP), and with
/// `passdb = "ldap-only"` every refusal (app passwords are mailcow's then).
#[test]
fn http_refusals_say_whether_another_passdb_may_decide() {
    use crate::serve_e2e::{write_secret, KC_USER, SECRET};
    let e = Env::new();
    let u = "jdoe@example.org";
    e.mailbox(u, "ldap", 1, "", "{}");
    e.mailbox(KC_USER, "keycloak", 1, "", "{}");
    let secret = write_secret(e.dir.path());
    let auth = |serve: &crate::support::serve::Serve, user: &str, pw: &str, rip: &str| {
        let before = e.slapd.binds();
        let body = serde_json::json!({"username": user, "password": pw, "real_rip": rip, "service": "imap"});
        let r = serve.http(
            "POST",
            "/auth",
            &[("X-Auth-Secret", SECRET)],
            &body.to_string(),
        );
        (r.status, r.json, e.ops_since(&before))
    };
    let (serve, _) = e.serve(&secret, "sogo_address = \"192.0.2.248\"");
    let (st, json, ops) = auth(&serve, u, "Wr0ng-http-1", "192.0.2.7");
    assert_eq!((st, ops.user_failed), (401, 1), "{json} {ops:?}");
    assert_eq!(
        json,
        serde_json::json!({"success": false}),
        "decided: final"
    );
    let (st, json, ops) = auth(&serve, KC_USER, "kc-anything", "192.0.2.7");
    assert_eq!(
        (st, json["not_ours"].as_bool(), ops.total()),
        (401, Some(true), 0),
        "{json}"
    );
    let (st, json, ops) = auth(&serve, u, "sogo-sso-secret", "192.0.2.248");
    assert_eq!(
        (st, json["not_ours"].as_bool(), ops.total()),
        (401, Some(true), 0),
        "{json} {ops:?}"
    );
    drop(serve);

    let (serve, _) = e.serve(&secret, "passdb = \"ldap-only\"");
    let (st, json, ops) = auth(&serve, u, "Wr0ng-http-2", "192.0.2.7");
    assert_eq!(
        (st, json["not_ours"].as_bool(), ops.user_failed),
        (401, Some(true), 1),
        "{json}"
    );
    let (st, json, _) = auth(&serve, u, "secret1", "192.0.2.7");
    assert_eq!((st, json["success"].as_bool()), (200, Some(true)), "{json}");
}

/// SOGo's single sign-on, as mailcow's `mailcowauth.php` takes it: from
/// SOGo's address (`mailcow.sogo_address`) with the secret of
/// `mailcow.sogo_sso_file` (mailcow's `/etc/sogo-sso/sogo-sso.pass`, written
/// by its Dovecot container at each start, mode 0644), a login is accepted
/// with no LDAP traffic and `sasl_log` says "SOGO". The secret from any other
/// address is only a password (tried as one: one failed bind). From SOGo's
/// address another password is decided as mailcow's `'NONE'` service does (a
/// DAV client's own password or app password, which SOGo passes on): a
/// wrong one costs the one bind any wrong password costs.
#[test]
fn sogo_single_sign_on_from_sogos_address_only() {
    use crate::serve_e2e::{write_secret, SECRET};
    use std::os::unix::fs::PermissionsExt;
    let e = Env::new();
    let u = "jdoe@example.org";
    e.mailbox(u, "ldap", 1, "", "{}");
    e.mailbox("off@example.org", "ldap", 0, "", "{}");
    e.mailbox("nologin@example.org", "ldap", 2, "", "{}");
    e.mailbox(
        "mc@example.org",
        "mailcow",
        1,
        &dovecot_hash("SHA512-CRYPT", "mc-own-1"),
        "{}",
    );
    e.app_password(u, &dovecot_hash("BLF-CRYPT", "sogo-App-1"), 1, &["imap"]);
    let sso = e.dir.path().join("sogo-sso.pass");
    // As mailcow's Dovecot entrypoint writes it: `echo -n ... >`, umask 022.
    std::fs::write(&sso, "k3y0fs0g0ss0aaaaaaaaaaaaaaaaaaa1").unwrap();
    std::fs::set_permissions(&sso, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = write_secret(e.dir.path());
    let (serve, _) = e.serve(
        &secret,
        &format!(
            "sogo_address = \"192.0.2.248\"\nsogo_sso_file = \"{}\"",
            sso.display()
        ),
    );
    let auth = |user: &str, pw: &str, rip: &str| {
        let before = e.slapd.binds();
        let body = serde_json::json!({"username": user, "password": pw, "real_rip": rip, "service": "imap"});
        let r = serve.http(
            "POST",
            "/auth",
            &[("X-Auth-Secret", SECRET)],
            &body.to_string(),
        );
        let ops = e.ops_since(&before);
        println!("{user} from {rip}: {} {} {ops:?}", r.status, r.json);
        (r.status, r.json, ops)
    };
    let sogo = "192.0.2.248";
    // sasl_log has one row per (service, real_rip, username): this one's app_password.
    let sasl = |user: &str, service: &str| {
        e.db.sql(&format!(
            "SELECT app_password FROM sasl_log WHERE username = '{user}' AND service = '{service}' AND real_rip = '{sogo}'"
        ))
        .trim()
        .to_owned()
    };

    let (st, json, ops) = auth(u, "k3y0fs0g0ss0aaaaaaaaaaaaaaaaaaa1", sogo);
    assert_eq!((st, json["user"].as_str()), (200, Some(u)), "{json}");
    assert_eq!(ops.total(), 0, "single sign-on: no LDAP traffic: {ops:?}");
    assert_eq!(sasl(u, "SOGO"), "0");
    // active = 2 receives mail and mailcow's userdb answers for it: SSO logs
    // in as in mailcow; active = 0 does not.
    let (st, _, ops) = auth(
        "nologin@example.org",
        "k3y0fs0g0ss0aaaaaaaaaaaaaaaaaaa1",
        sogo,
    );
    assert_eq!((st, ops.total()), (200, 0));
    let (st, json, ops) = auth("off@example.org", "k3y0fs0g0ss0aaaaaaaaaaaaaaaaaaa1", sogo);
    assert_eq!((st, ops.total()), (401, 0), "{json}");
    assert_eq!(json, serde_json::json!({"success": false}));
    let (st, _, ops) = auth(
        "nobody@example.org",
        "k3y0fs0g0ss0aaaaaaaaaaaaaaaaaaa1",
        sogo,
    );
    assert_eq!((st, ops.total()), (401, 0));

    // The secret from any other address is just a password: wrong, and final.
    let (st, json, ops) = auth(u, "k3y0fs0g0ss0aaaaaaaaaaaaaaaaaaa1", "192.0.2.7");
    assert_eq!((st, ops.user, ops.user_failed), (401, 1, 1), "{json}");
    assert_eq!(json, serde_json::json!({"success": false}));
    let (st, _, ops) = auth(
        "mc@example.org",
        "k3y0fs0g0ss0aaaaaaaaaaaaaaaaaaa1",
        "192.0.2.7",
    );
    assert_eq!((st, ops.total()), (401, 0));

    // From SOGo's address, other passwords are decided without a service.
    let (st, _, ops) = auth(u, "Wr0ng-sogo-1", sogo);
    assert_eq!(
        (st, ops.user, ops.user_failed),
        (401, 1, 1),
        "a wrong password: one bind"
    );
    let (st, _, ops) = auth("mc@example.org", "Wr0ng-sogo-2", sogo);
    assert_eq!((st, ops.total()), (401, 0));
    let (st, _, ops) = auth(u, "secret1", sogo);
    assert_eq!((st, ops.user, ops.user_failed), (200, 1, 0));
    assert_eq!(sasl(u, "NONE"), "0");
    // IMAP is off for this app password: 'NONE' checks no flag (as mailcow).
    let (st, _, ops) = auth(u, "sogo-App-1", sogo);
    assert_eq!((st, ops.total()), (200, 0));
    assert_ne!(sasl(u, "SOGO"), "0", "the app password's id");
    let (st, _, _) = auth(u, "sogo-App-1", "192.0.2.7");
    assert_eq!(st, 401, "imap_access 0 for the app password elsewhere");

    // mailcow writes a new secret at each start of its Dovecot: read each time.
    std::fs::write(&sso, "n3ws3cr3t").unwrap();
    let (st, _, ops) = auth(u, "n3ws3cr3t", sogo);
    assert_eq!((st, ops.total()), (200, 0));
    let (st, _, ops) = auth(u, "k3y0fs0g0ss0aaaaaaaaaaaaaaaaaaa1", sogo);
    assert_eq!(
        (st, ops.user_failed),
        (401, 1),
        "the old secret is a wrong password now"
    );
    // A secret others may write is refused: a temporary failure, no bind.
    std::fs::set_permissions(&sso, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (st, json, ops) = auth(u, "n3ws3cr3t", sogo);
    assert_eq!((st, ops.total()), (503, 0), "{json}");
    // The reason goes to the log; the client is told only "temporary failure".
    assert_eq!(json["error"], "temporary failure", "{json}");
    assert!(
        serve.log_text().contains("sogo_sso_file"),
        "{}",
        serve.log_text()
    );
    assert!(
        !serve.log_text().contains("n3ws3cr3t"),
        "the secret is never logged"
    );
}

/// In `serve`, a refusal decided before any bind takes as long as a wrong
/// password: an address without a mailbox (no provisioning) and a mailbox
/// that may not log in (inactive) are answered no sooner than the median of
/// the latest wrong passwords, and cost the directory nothing. Over 200
/// interleaved triples the medians differ by at most 0.25 ms + 25 % of the
/// wrong password's (the old code answered both from the database alone:
/// well under half a wrong password's time, which needs a search and a
/// bind).
#[test]
fn refusals_before_any_bind_take_as_long_as_a_wrong_password_in_serve() {
    use crate::serve_e2e::write_secret;
    let e = Env::new();
    let u = "jdoe@example.org";
    e.mailbox(u, "ldap", 1, "", "{}");
    e.mailbox("off@example.org", "ldap", 0, "", "{}");
    let secret = write_secret(e.dir.path());
    let (serve, _) = e.serve(&secret, "");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let timed = |login: &str| {
        let t = Instant::now();
        let r = serve.sasl(login, "guess-1", "smtp", "");
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(
            r.as_deref().is_some_and(|r| r.starts_with("NO")),
            "{login}: {r:?}"
        );
        ms
    };
    // Warm the pools and the wrong-password figures.
    for _ in 0..20 {
        timed(u);
    }
    let before = e.slapd.binds();
    let (mut unknown, mut inactive, mut wrong) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..200 {
        unknown.push(timed(&format!("nobody{i}@example.org")));
        inactive.push(timed("off@example.org"));
        wrong.push(timed(u));
    }
    let (mu, mi, mw) = (
        median(&mut unknown),
        median(&mut inactive),
        median(&mut wrong),
    );
    eprintln!(
        "median answer: no mailbox {mu:.3} ms, inactive {mi:.3} ms, wrong password {mw:.3} ms"
    );
    for (what, m) in [("no mailbox", mu), ("inactive mailbox", mi)] {
        assert!(
            (m - mw).abs() <= 0.25 + 0.25 * mw,
            "median answer: {what} {m:.3} ms, wrong password {mw:.3} ms"
        );
    }
    // Only the wrong passwords reached the directory: 200 failed binds.
    let ops = e.ops_since(&before);
    assert_eq!((ops.user, ops.user_failed), (200, 200), "{ops:?}");
}

/// A session of its own holding `LOCK TABLES mailbox WRITE` on `db`, so that
/// every other session's read of `mailbox` waits until it is dropped.
struct MailboxLock {
    child: std::process::Child,
}

impl MailboxLock {
    fn hold(db: &Db) -> MailboxLock {
        use std::io::{BufRead, Write};
        use std::process::Stdio;
        let mut child = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", db.server.socket.display()))
            .args(["-uroot", "--batch", "--skip-column-names", "--unbuffered"])
            .arg(&db.name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        stdin
            .write_all(b"LOCK TABLES mailbox WRITE; SELECT 'locked';\n")
            .unwrap();
        stdin.flush().unwrap();
        // Held once the session has answered the statement after the lock.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        MailboxLock { child }
    }
}

impl Drop for MailboxLock {
    fn drop(&mut self) {
        use std::io::Write;
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"UNLOCK TABLES;\n");
        }
        let _ = self.child.wait();
    }
}

/// slapd's accepted connections so far (its stats log).
fn accepts(slapd: &Slapd) -> usize {
    std::fs::read_to_string(slapd.dir.join("slapd.log"))
        .unwrap_or_default()
        .matches(" ACCEPT from ")
        .count()
}

/// A one-shot login (checkpassword) opens the directory's connection while
/// the database answers, and binds only once the mailbox row says so
/// (issue 15). The mailbox table is locked, so the database query waits for
/// as long as the test likes: meanwhile slapd must have accepted the login's
/// connection and seen no operation on it. Old code asked the directory only
/// after the database: no connection until the lock went (the wait below
/// failed after 10 s).
#[test]
fn the_directory_connection_overlaps_the_database_query_and_binds_wait_for_the_row() {
    let e = Env::new();
    e.mailbox("jdoe@example.org", "ldap", 1, "", "{}");
    e.mailbox("nomail@example.org", "ldap", 2, "", "{}");
    let plain = e.config("");
    let ldaps = |name: &str, ca: &Path| {
        let section = format!(
            "[ldap]\nhosts = \"localhost:{}\"\nuse_ssl = true\nca_file = \"{}\"\nbase_dn = \"{BASE}\"\n\
             bind_dn = \"{READER_DN}\"\nbind_password = \"{READER_PW}\"\nconnect_timeout_ms = 1000\ntimeout_ms = 2000\n",
            e.slapd.ldaps_port,
            ca.display()
        );
        e.config_with(name, &section, "")
    };
    let tls = ldaps("ldaps.toml", &e.slapd.pki.ca);
    // The TLS handshake on the opening thread fails: still 111, no bind.
    let wrong_ca = ldaps("wrong-ca.toml", &e.slapd.pki.other_ca);
    for (cfg, user, pw, code, binds) in [
        (&plain, "jdoe@example.org", "secret1", 0, 1),
        // active = 2: refused from the row, the opened connection unused.
        (&plain, "nomail@example.org", "nomailpw", 1, 0),
        (&tls, "jdoe@example.org", "secret1", 0, 1),
        (&wrong_ca, "jdoe@example.org", "secret1", 111, 0),
    ] {
        let accepted = accepts(&e.slapd);
        let ops = e.slapd.binds();
        let lock = MailboxLock::hold(&e.db);
        std::thread::scope(|s| {
            let login = s.spawn(|| e.login(cfg, user, pw, "imap"));
            let until = Instant::now() + std::time::Duration::from_secs(10);
            while accepts(&e.slapd) == accepted {
                assert!(
                    Instant::now() < until && !login.is_finished(),
                    "{user}: no directory connection while the database query waits"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(
                e.ops_since(&ops).total(),
                0,
                "{user}: the directory was used before the mailbox row was read"
            );
            assert!(
                !login.is_finished(),
                "{user}: decided without its mailbox row"
            );
            drop(lock);
            let (r, d) = login.join().unwrap();
            assert_eq!(
                (r.code, d.user, d.user_failed),
                (code, binds, 0),
                "{user}: {r:?} {d:?}"
            );
        });
        assert_eq!(
            accepts(&e.slapd),
            accepted + 1,
            "{user}: one connection per login"
        );
    }
}

/// With the directory's connection opened first, a database that cannot be
/// reached is still a temporary failure (111) and nothing is bound.
#[test]
fn a_dead_database_is_111_and_no_bind_although_the_directory_was_opened() {
    let e = Env::new();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let text = format!(
        "state_dir = \"{}\"\n{}\n[database]\nhost = \"127.0.0.1\"\nport = {port}\nname = \"x\"\nuser = \"x\"\npassword = \"x\"\nconnect_timeout_ms = 2000\n\
         [provisioning]\nlogin_provisioning = false\n",
        e.dir.path().display(),
        e.slapd.ldap_section(),
    );
    let cfg = write_config(e.dir.path(), "dead-db.toml", &text);
    let (r, ops) = e.login(&cfg, "jdoe@example.org", "secret1", "imap");
    assert_eq!((r.code, ops.total()), (111, 0), "{r:?} {ops:?}");
}

/// A text of `[messages]` set by the tests below.
const LOGIN_DISABLED: &str = "Login disabled: ask the help desk (ext. 123).";

/// Refusals after the password was verified are told (Dovecot's `nologin`
/// and `reason` through the reply program), those before it are not: with
/// `passdb = "full"` an LDAP mailbox's state is refused before any bind
/// (plain, as mailcow does), a mailcow mailbox's once its own password (or
/// an app password) matched; with `"ldap-only"` after the bind. A wrong
/// password is never told anything.
#[test]
fn reasons_are_told_only_once_the_password_was_verified() {
    let e = Env::new();
    let messages = format!("[messages]\nlogin_disabled = \"{LOGIN_DISABLED}\"\n");
    let cfg = e.config(&messages);
    e.mailbox("nomail@example.org", "ldap", 2, "", "{}");
    e.app_password(
        "nomail@example.org",
        &dovecot_hash("SSHA256", "told-App-1"),
        1,
        &[],
    );
    e.mailbox(
        "mc2@example.org",
        "mailcow",
        2,
        &dovecot_hash("BLF-CRYPT", "Mc-Own-2"),
        "{}",
    );
    e.mailbox(
        "mc3@example.org",
        "mailcow",
        1,
        &dovecot_hash("SSHA512", "Mc-Own-3"),
        r#"{"imap_access":"0"}"#,
    );
    let told = |r: &Run| -> Option<String> {
        if r.code != 0 || e.reply.var("nologin").as_deref() != Some("Y") {
            return None;
        }
        assert_eq!(
            e.reply.var("EXTRA").as_deref(),
            Some("nologin reason"),
            "{r:?}"
        );
        assert_eq!(e.reply.var("userdb_uid"), None, "{r:?}");
        e.reply.var("reason")
    };
    let plain = |r: &Run, what: &str| {
        assert_eq!(r.code, 1, "{what}: {r:?}");
        assert!(e.reply.env().is_none(), "{what}: reply ran: {r:?}");
    };

    // An LDAP mailbox set to "disallow login": refused before the bind, plainly.
    assert_eq!(e.quiet(&cfg, "nomail@example.org", "nomailpw", "imap"), 1);
    assert!(e.reply.env().is_none());
    // ... but an app password of it matched: told, still without a bind.
    let (r, ops) = e.login(&cfg, "nomail@example.org", "told-App-1", "imap");
    assert_eq!(ops.total(), 0, "{ops:?}");
    assert_eq!(told(&r).as_deref(), Some(LOGIN_DISABLED), "{r:?}");
    // A mailcow mailbox: told once its own password matched, never for a wrong one.
    let (r, ops) = e.login(&cfg, "mc2@example.org", "Mc-Own-2", "imap");
    assert_eq!(ops.total(), 0, "{ops:?}");
    assert_eq!(told(&r).as_deref(), Some(LOGIN_DISABLED), "{r:?}");
    assert!(r.stderr.contains("messages.login_disabled"), "{r:?}");
    let (r, _) = e.login(&cfg, "mc2@example.org", "Mc-Own-x", "imap");
    plain(&r, "mailcow mailbox, wrong password");
    // A protocol the mailbox may not use: the default text; another protocol logs in.
    let (r, _) = e.login(&cfg, "mc3@example.org", "Mc-Own-3", "imap");
    assert_eq!(
        told(&r).as_deref(),
        Some("This mailbox may not use this protocol. Please contact your administrator."),
        "{r:?}"
    );
    let (r, _) = e.login(&cfg, "mc3@example.org", "Mc-Own-x", "imap");
    plain(&r, "service off, wrong password");
    let (r, _) = e.login(&cfg, "mc3@example.org", "Mc-Own-3", "pop3");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.reply.var("USER").as_deref(), Some("mc3@example.org"));
    assert_eq!(e.reply.var("nologin"), None);

    // ldap-only: the mailbox's state is checked after the bind, so told;
    // a wrong password is one failed bind and the plain failure.
    let only = e.config(&format!("[mailcow]\npassdb = \"ldap-only\"\n{messages}"));
    let (r, ops) = e.login(&only, "nomail@example.org", "nomailpw", "imap");
    assert_eq!((ops.user, ops.user_failed), (1, 0), "{ops:?}");
    assert_eq!(told(&r).as_deref(), Some(LOGIN_DISABLED), "{r:?}");
    let (r, ops) = e.login(&only, "nomail@example.org", "Wrong-1", "imap");
    assert_eq!((ops.user, ops.user_failed), (1, 1), "{ops:?}");
    plain(&r, "ldap-only, wrong password");

    // An empty text: the plain refusal.
    let off = e.config("[messages]\nlogin_disabled = \"\"\n");
    let (r, _) = e.login(&off, "mc2@example.org", "Mc-Own-2", "imap");
    plain(&r, "messages.login_disabled = \"\"");
}

/// The same through serve and the shipped Lua passdb in Dovecot 2.3: serve
/// answers 401 with `"nologin": true` and the text, the Lua script hands
/// Dovecot `nologin` and `reason`, and the IMAP client reads the text in the
/// `NO`; a wrong password still gets Dovecot's usual failure.
#[test]
fn reasons_reach_the_imap_client_through_dovecot_lua_and_serve() {
    use crate::serve_e2e::{install_lua, lua_block_23, write_secret, SECRET};
    use crate::support::clients::imap_login;
    use crate::support::dovecot::Dovecot;
    require("dovecot", "dovecot-core");
    let e = Env::new();
    let root = e.dir.path().to_owned();
    e.mailbox(
        "mc2@example.org",
        "mailcow",
        2,
        &dovecot_hash("SHA512-CRYPT", "Mc-Own-2"),
        "{}",
    );
    let secret = write_secret(&root);
    let (serve, port) = e.serve(
        &secret,
        &format!("\n[messages]\nlogin_disabled = \"{LOGIN_DISABLED}\"\n"),
    );
    let body = serde_json::json!({"username": "mc2@example.org", "password": "Mc-Own-2", "service": "imap"});
    let r = serve.http(
        "POST",
        "/auth",
        &[("X-Auth-Secret", SECRET)],
        &body.to_string(),
    );
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.json,
        serde_json::json!({"success": false, "nologin": true, "reason": LOGIN_DISABLED})
    );
    let wrong = serde_json::json!({"username": "mc2@example.org", "password": "Mc-Own-x", "service": "imap"});
    let r = serve.http(
        "POST",
        "/auth",
        &[("X-Auth-Secret", SECRET)],
        &wrong.to_string(),
    );
    assert_eq!(
        (r.status, r.json.clone()),
        (401, serde_json::json!({"success": false})),
        "{r:?}"
    );

    let lua = install_lua(&root);
    let block = lua_block_23(&lua, port, &secret);
    let dovecot = Dovecot::start_with(&root, &e.slapd.ldap_section(), |_| block);
    let r = imap_login(dovecot.imap_port, "mc2@example.org", "Mc-Own-2");
    println!("LOGIN with the right password: {r}");
    assert!(
        r.starts_with("NO") && r.contains(LOGIN_DISABLED) && !r.contains("AUTHENTICATIONFAILED"),
        "{r}\n{}",
        dovecot.log()
    );
    let r = imap_login(dovecot.imap_port, "mc2@example.org", "Mc-Own-x");
    assert_eq!(
        r,
        "NO [AUTHENTICATIONFAILED] Authentication failed.",
        "{}",
        dovecot.log()
    );
    println!("{}", dovecot.log());
}
