//! Active Directory: the binary against a real Samba AD DC (see
//! `support::samba`), as most admins connect mailcow to a directory.

use crate::provision::{DEFAULT_TEMPLATE, STAFF_TEMPLATE};
use crate::support::mariadb::Db;
use crate::support::samba::{
    long_display_name, AdUser, SambaDc, ALICE, BOB, DORA_DISABLED, EVE_EXPIRED, GROUP_DN, HOST,
    LARRY, LOCKOUT_THRESHOLD, LONGNAME, MIKE_MUST_CHANGE, OTHER_HOST, OUTER_GROUP_DN,
    PAT_PASSWORD_EXPIRED, SVC_PW, TOOLONG,
};
use crate::support::serve::Serve;
use crate::support::{bin, run_ok, write_config, Pki, StubReply};
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// The login filter of the README's Active Directory section: sAMAccountName,
/// userPrincipalName or mail, enabled accounts only.
pub const AD_FILTER: &str = "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2))(|(sAMAccountName=%u)(userPrincipalName=%u)(mail=%u)))";

struct Env {
    dir: TempDir,
    dc: SambaDc,
    reply: StubReply,
    configs: std::cell::Cell<usize>,
}

impl Env {
    fn new() -> Env {
        let dir = TempDir::new().unwrap();
        let dc = SambaDc::start(dir.path());
        let reply = StubReply::create(dir.path());
        Env {
            dir,
            dc,
            reply,
            configs: Default::default(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A config with the DC's `[ldap]` section plus `extra` lines in it.
    fn config(&self, ldap_extra: &str, rest: &str) -> PathBuf {
        self.config_for(HOST, "use_ssl = true", ldap_extra, rest)
    }

    /// [`Self::config`] for another host name or TLS mode.
    fn config_for(&self, host: &str, tls_line: &str, ldap_extra: &str, rest: &str) -> PathBuf {
        let text = format!(
            "state_dir = \"{}\"\n{}username_field = \"sAMAccountName\"\nfilter = \"{AD_FILTER}\"\n{ldap_extra}\n{rest}",
            self.path().display(),
            self.dc.ldap_section_for(host, tls_line),
        );
        // A file of its own for each config, so that an earlier one stays valid.
        let n = self.configs.get() + 1;
        self.configs.set(n);
        write_config(self.path(), &format!("config-{n}.toml"), &text)
    }
}

#[test]
fn samba_dc_fixture_answers_over_ldaps() {
    let env = Env::new();
    // libldap's client (what mailcow's PHP uses) over LDAPS with Samba's CA.
    let mail = env
        .dc
        .read_attr(&format!("(sAMAccountName={})", ALICE.sam), "mail");
    assert_eq!(mail, [ALICE.mail]);
    let dn = env.dc.read_attr("(sAMAccountName=bob)", "dn");
    assert_eq!(
        dn,
        ["CN=Builder\\, Bob,OU=Sales,OU=Staff,DC=corp,DC=example,DC=org"]
    );
}

#[test]
fn samba_certificate_without_subject_alt_name_is_accepted_by_cn() {
    let env = Env::new();
    // LDAPS by the name in the certificate's CN, with Samba's CA.
    let cfg = env.config("", "");
    let r = env.dc.login(&cfg, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("has no subjectAltName")
            && r.stderr.contains("should carry a subjectAltName"),
        "{r:?}"
    );
    // Once: the next login (another process) does not repeat it.
    let r = env.dc.login(&cfg, ALICE.sam, "Wrong-Pass-1", &env.reply);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(!r.stderr.contains("subjectAltName"), "{r:?}");
    // The non-ASCII password of the user whose CN has a comma, in a nested OU.
    let r = env.dc.login(&cfg, BOB.sam, BOB.password, &env.reply);
    assert_eq!(r.code, 0, "{r:?}");
    let t = env.dc.admin(&cfg, &["connection-test"], "");
    assert_eq!(t.code, 0, "{t:?}");
    assert!(
        t.stdout
            .contains("; host name matched by CN (the certificate has no subjectAltName)"),
        "{}",
        t.stdout
    );
    // StartTLS on 389: the same certificate, the same rule.
    let cfg = env.config_for(HOST, "use_tls = true", "", "");
    let r = env.dc.login(&cfg, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 0, "{r:?}");

    // Another name of the same address is not in the certificate: refused,
    // and connection-test shows the name the certificate does carry.
    let cfg = env.config_for(OTHER_HOST, "use_ssl = true", "", "");
    let r = env.dc.login(&cfg, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 111, "{r:?}");
    let t = env.dc.admin(&cfg, &["connection-test"], "");
    assert_eq!(t.code, 1, "{t:?}");
    assert!(
        t.stdout.contains(&format!("the certificate does not name {OTHER_HOST}: it carries no subjectAltName; CN DC1.corp.example.org")),
        "{}",
        t.stdout
    );
}

#[test]
fn a_certificate_with_subject_alt_name_is_judged_by_it_alone() {
    let mut env = Env::new();
    // A certificate whose CN is the DC's name but whose subjectAltName names only another.
    let pki = Pki::create(env.path());
    let d = env.path();
    let ossl = |args: &[&str]| {
        run_ok(Command::new("openssl").args(args).current_dir(d));
    };
    ossl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "san.key",
        "-out",
        "san.csr",
        "-subj",
        &format!("/CN={HOST}"),
    ]);
    std::fs::write(
        d.join("san.cnf"),
        format!("subjectAltName=DNS:{OTHER_HOST}\n"),
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "san.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "san.pem",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
    ]);
    env.dc.restart_with(&format!(
        "\ttls certfile = {d}/san.pem\n\ttls keyfile = {d}/san.key\n\ttls cafile = {d}/ca.pem\n",
        d = d.display()
    ));
    let ca_line = format!("ca_file = \"{}\"", pki.ca.display());
    let with_ca = |host: &str| {
        let p = env.config_for(host, "use_ssl = true", "", "");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(|l| {
                if l.starts_with("ca_file") {
                    ca_line.clone()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        write_config(env.path(), "config.toml", &text)
    };
    // The CN names the host, but the certificate has a subjectAltName: refused.
    let cfg = with_ca(HOST);
    let r = env.dc.login(&cfg, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 111, "{r:?}");
    let t = env.dc.admin(&cfg, &["connection-test"], "");
    assert!(
        t.stdout
            .contains(&format!("it carries subjectAltName {OTHER_HOST}")),
        "{}",
        t.stdout
    );
    // The subjectAltName's name: accepted, and connection-test says how.
    let cfg = with_ca(OTHER_HOST);
    let r = env.dc.login(&cfg, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("no subjectAltName"), "{r:?}");
    let t = env.dc.admin(&cfg, &["connection-test"], "");
    assert_eq!(t.code, 0, "{t:?}");
    assert!(
        t.stdout.contains("; host name matched by subjectAltName"),
        "{}",
        t.stdout
    );
}

/// The login filter without the disabled-account clause, so that AD itself refuses.
const ANY_ACCOUNT_FILTER: &str =
    "(&(objectClass=user)(|(sAMAccountName=%u)(userPrincipalName=%u)(mail=%u)))";

/// A refused login: exit 1, `reason` in the log line and in `test`.
fn assert_refused(env: &Env, cfg: &Path, user: &AdUser, reason: &str) {
    let r = env.dc.login(cfg, user.sam, user.password, &env.reply);
    assert_eq!(r.code, 1, "{}: {r:?}", user.sam);
    assert!(
        r.stderr.contains("result=reject") && r.stderr.contains(reason),
        "{}: {r:?}",
        user.sam
    );
    assert!(
        !r.stderr.contains("AcceptSecurityContext"),
        "raw server text logged: {r:?}"
    );
    let t = env
        .dc
        .admin(cfg, &["test", user.sam], &format!("{}\n", user.password));
    assert_eq!(t.code, 1, "{}: {t:?}", user.sam);
    assert!(
        t.stdout.contains("RESULT: reject") && t.stdout.contains(reason),
        "{}: {}",
        user.sam,
        t.stdout
    );
}

/// A refusal the user is told: checkpassword runs the reply program with
/// Dovecot's `nologin` and `reason` fields (the password was right), the
/// log line names the reason, and `test` says what Dovecot is told.
fn assert_told(env: &Env, cfg: &Path, user: &AdUser, reason: &str, text: &str) {
    let r = env.dc.login(cfg, user.sam, user.password, &env.reply);
    assert_eq!(r.code, 0, "{}: {r:?}", user.sam);
    assert!(
        r.stderr.contains("result=reject") && r.stderr.contains(reason),
        "{}: {r:?}",
        user.sam
    );
    assert_eq!(env.reply.var("EXTRA").as_deref(), Some("nologin reason"));
    assert_eq!(env.reply.var("nologin").as_deref(), Some("Y"));
    assert_eq!(env.reply.var("reason").as_deref(), Some(text));
    assert_eq!(env.reply.var("userdb_uid"), None);
    let t = env
        .dc
        .admin(cfg, &["test", user.sam], &format!("{}\n", user.password));
    assert_eq!(t.code, 1, "{}: {t:?}", user.sam);
    assert!(
        t.stdout.contains("RESULT: reject")
            && t.stdout.contains(reason)
            && t.stdout
                .contains(&format!("Dovecot is told: nologin, reason=\"{text}\"")),
        "{}: {}",
        user.sam,
        t.stdout
    );
}

/// A wrong password for `user`: the ordinary failure, nothing told.
fn assert_wrong_password(env: &Env, cfg: &Path, user: &AdUser) {
    let r = env.dc.login(cfg, user.sam, "Wrong-Pass-1", &env.reply);
    assert_eq!(r.code, 1, "{}: {r:?}", user.sam);
    assert!(r.stderr.contains("reason=\"wrong password\""), "{r:?}");
    assert!(env.reply.env().is_none(), "reply program ran: {r:?}");
}

/// The texts of the README's example: two set, one off, the rest default.
const MESSAGES: &str = "[messages]\npassword_expired = \"Your password has expired: change it at https://id.corp.example.org/\"\nmust_change_password = \"Change your password at https://id.corp.example.org/ first.\"\naccount_disabled = \"\"\n";

#[test]
fn active_directory_refusal_reasons_are_named_and_told_only_for_the_right_password() {
    let env = Env::new();
    // The README's filter keeps the disabled account out before any bind.
    let cfg = env.config("", MESSAGES);
    let r = env
        .dc
        .login(&cfg, DORA_DISABLED.sam, DORA_DISABLED.password, &env.reply);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("reason=\"unknown user\""), "{r:?}");
    let t = env.dc.admin(
        &cfg,
        &["test", DORA_DISABLED.sam],
        &format!("{}\n", DORA_DISABLED.password),
    );
    assert!(
        t.stdout.contains("RESULT: reject - unknown user"),
        "{}",
        t.stdout
    );

    // Without that clause, AD refuses the bind and says why.
    let cfg = env.config_for(HOST, "use_ssl = true", "", MESSAGES);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(AD_FILTER, ANY_ACCOUNT_FILTER);
    let cfg = write_config(env.path(), "any.toml", &text);
    // messages.account_disabled = "": the plain refusal.
    assert_refused(
        &env,
        &cfg,
        &DORA_DISABLED,
        "account disabled (Active Directory: data 533)",
    );
    assert_told(
        &env,
        &cfg,
        &EVE_EXPIRED,
        "account expired (Active Directory: data 701)",
        "Your account has expired. Please contact your administrator.",
    );
    assert_told(
        &env,
        &cfg,
        &MIKE_MUST_CHANGE,
        "must change password (Active Directory: data 773)",
        "Change your password at https://id.corp.example.org/ first.",
    );
    // A password older than the domain's maximum age: data 532, the configured text.
    assert_told(
        &env,
        &cfg,
        &PAT_PASSWORD_EXPIRED,
        "password expired (Active Directory: data 532)",
        "Your password has expired: change it at https://id.corp.example.org/",
    );
    // AD names these only for the right password: a wrong one is a wrong
    // password, whatever the account's state.
    for user in [
        &ALICE,
        &EVE_EXPIRED,
        &MIKE_MUST_CHANGE,
        &PAT_PASSWORD_EXPIRED,
        &DORA_DISABLED,
    ] {
        assert_wrong_password(&env, &cfg, user);
    }
    // Each wrong password counts; at the threshold the account is locked out,
    // and then even the right password is refused, with that reason, and
    // never told (AD says "locked out" whatever the password).
    for _ in 0..LOCKOUT_THRESHOLD {
        let r = env.dc.login(&cfg, LARRY.sam, "Wrong-Pass-1", &env.reply);
        assert_eq!(r.code, 1, "{r:?}");
    }
    assert_eq!(
        env.dc.read_attr("(sAMAccountName=larry)", "badPwdCount"),
        [LOCKOUT_THRESHOLD.to_string()]
    );
    assert_refused(
        &env,
        &cfg,
        &LARRY,
        "account locked out (Active Directory: data 775)",
    );
    assert!(env.reply.env().is_none());
    let t = env
        .dc
        .admin(&cfg, &["test", LARRY.sam], &format!("{}\n", LARRY.password));
    assert!(
        t.stdout.contains("unlock it in Active Directory"),
        "{}",
        t.stdout
    );
}

/// mailcow's side: the domain and two templates, "Staff" for members of the
/// "Mail Staff" group (memberOf, by full DN), "Default" for everyone else.
fn mailcow_db() -> Db {
    let db = Db::new();
    db.sql(&format!(
        "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active) VALUES ('corp.example.org', 100, 10, 10240, 10240000, 1);\
         INSERT INTO templates (template, type, attributes) VALUES ('Default', 'mailbox', '{DEFAULT_TEMPLATE}');\
         INSERT INTO templates (template, type, attributes) VALUES ('Staff', 'mailbox', '{STAFF_TEMPLATE}');"
    ));
    db
}

/// The provisioning part of an AD config: memberOf mapping, mail as the address.
fn provisioning(db: &Db) -> String {
    format!(
        "attribute_field = \"memberOf\"\n\n[[attribute_mapping]]\nattribute = \"{GROUP_DN}\"\ntemplate = \"Staff\"\n\n\
         [provisioning]\nmail_field = \"mail\"\ndefault_template = \"Default\"\n\n{}\n\
         [sync]\nimport_users = true\nperiodic_full_sync = true\npage_size = 3\n",
        db.socket_section()
    )
}

fn template_of(db: &Db, user: &str) -> String {
    db.value(&format!(
        "SELECT JSON_UNQUOTE(JSON_EXTRACT(attributes, '$.attribute_hash')) FROM mailbox WHERE username = '{user}'"
    ))
}

#[test]
fn sync_from_the_domain_root_completes_and_a_failure_backs_off() {
    let env = Env::new();
    let db = mailcow_db();
    assert_eq!(TOOLONG.mail.chars().count(), 256);
    let cfg = env.config(&provisioning(&db), "");
    // A leftover row of a mailbox removed by hand: reset, as mailcow does.
    db.sql(&format!(
        "INSERT INTO quota2 (username, bytes, messages) VALUES ('{}', 12345, 7)",
        LARRY.mail
    ));
    let r = env.dc.admin(&cfg, &["sync"], "");
    // Samba answers the subtree search at the domain root with a continuation
    // reference (CN=Configuration): skipped and counted, not a failed search.
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("skipped 1 continuation reference(s)"),
        "{}",
        r.stdout
    );
    // Every enabled user with a mail address; the disabled one is filtered out.
    let imported =
        db.sql("SELECT username FROM mailbox WHERE authsource = 'ldap' ORDER BY username");
    let imported: Vec<&str> = imported.lines().collect();
    assert_eq!(
        imported,
        [
            ALICE.mail,
            BOB.mail,
            EVE_EXPIRED.mail,
            LARRY.mail,
            LONGNAME.mail,
            MIKE_MUST_CHANGE.mail,
            PAT_PASSWORD_EXPIRED.mail
        ],
        "{}",
        r.stdout
    );
    assert_eq!(
        db.value(&format!(
            "SELECT CONCAT(bytes, '/', messages) FROM quota2 WHERE username = '{}'",
            LARRY.mail
        )),
        "0/0"
    );
    // The address too long for mailcow's column fails that user only, reported.
    assert!(
        r.stdout
            .contains(&format!("could not create {}", TOOLONG.mail)),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("failed 1"), "{}", r.stdout);
    // A display name of 256 characters is cut to mailcow's 255, at a character boundary.
    let name = db.value(&format!(
        "SELECT name FROM mailbox WHERE username = '{}'",
        LONGNAME.mail
    ));
    assert_eq!(name.chars().count(), 255);
    assert!(long_display_name().starts_with(&name));
    // memberOf (a full group DN) selected the Staff template for alice only.
    let staff = template_of(&db, ALICE.mail);
    assert_ne!(staff, template_of(&db, BOB.mail));
    assert_eq!(
        template_of(&db, BOB.mail),
        template_of(&db, EVE_EXPIRED.mail)
    );
    assert_eq!(
        db.value(&format!(
            "SELECT name FROM mailbox WHERE username = '{}'",
            ALICE.mail
        )),
        "Alice Liddell"
    );
    // Recorded: the next run is not due.
    let r = env.dc.admin(&cfg, &["sync"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("not due yet"), "{}", r.stdout);

    // A failing run (the service password is wrong) backs off; --force ignores that.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let bad = write_config(
        env.path(),
        "bad.toml",
        &text.replace(SVC_PW, "Not-The-Pass-1"),
    );
    let r = env.dc.admin(&bad, &["sync", "--force"], "");
    assert_eq!(r.code, 111, "{r:?}");
    assert!(r.stderr.contains("the next run waits 2 min"), "{r:?}");
    let r = env.dc.admin(&bad, &["sync"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("backing off after 1 failed run(s)"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("started on"), "{}", r.stdout);
    let r = env.dc.admin(&bad, &["sync", "--force"], "");
    assert_eq!(r.code, 111, "{r:?}");
    assert!(r.stderr.contains("the next run waits 4 min"), "{r:?}");
    // Fixed: a forced run completes and clears the back-off.
    let r = env.dc.admin(&cfg, &["sync", "--force"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("failed 1"), "{}", r.stdout);
    let r = env.dc.admin(&cfg, &["sync"], "");
    assert!(r.stdout.contains("not due yet"), "{}", r.stdout);
}

const DOVECOT: &str = "[dovecot]\nuid = \"5000\"\ngid = \"5000\"\nhome = \"/var/vmail/%d/%n\"\n";

/// Alice's logins: sAMAccountName, UPN, mail, in odd cases.
const ALICE_LOGINS: &[&str] = &[
    "alice",
    "ALICE",
    "alice@corp.example.org",
    "Alice@CORP.example.org",
    "alice.liddell@corp.example.org",
    "ALICE.Liddell@Corp.Example.Org",
];

/// Width variants: the directory may or may not match them, but when it
/// does, they are alice and nobody else.
const ALICE_VARIANTS: &[&str] = &[
    "ａｌｉｃｅ",
    "ＡＬＩＣＥ@corp.example.org",
    "alice.liddell＠corp.example.org",
];

/// Every login of alice is one user: accepted as `user`, home from it; a
/// width variant is either the same user or refused, never another.
fn assert_one_user(env: &Env, cfg: &Path, user: &str) {
    for login in ALICE_LOGINS.iter().chain(ALICE_VARIANTS) {
        let r = env.dc.login(cfg, login, ALICE.password, &env.reply);
        if ALICE_VARIANTS.contains(login) && r.code == 1 {
            continue;
        }
        assert_eq!(r.code, 0, "{login}: {r:?}");
        assert_eq!(env.reply.var("USER").as_deref(), Some(user), "{login}");
        let (local, domain) = user.split_once('@').unwrap();
        assert_eq!(
            env.reply.var("userdb_home"),
            Some(format!("/var/vmail/{domain}/{local}")),
            "{login}"
        );
    }
    // `test` says the same.
    for login in ["alice", "Alice@CORP.example.org"] {
        let t = env
            .dc
            .admin(cfg, &["test", login], &format!("{}\n", ALICE.password));
        assert_eq!(t.code, 0, "{t:?}");
        assert!(
            t.stdout.contains(&format!("RESULT: accepted as {user}")),
            "{}",
            t.stdout
        );
    }
}

#[test]
fn one_canonical_user_whatever_was_typed() {
    let env = Env::new();
    // Without [database], with mail_field: the mail address for every login.
    let rest = format!("[provisioning]\nmail_field = \"mail\"\n\n{DOVECOT}");
    let cfg = env.config("", &rest);
    assert_one_user(&env, &cfg, ALICE.mail);
    // The same over StartTLS.
    let starttls = env.config_for(HOST, "use_tls = true", "", &rest);
    assert_one_user(&env, &starttls, ALICE.mail);

    // Without mail_field: the username attribute's own value, when it equals
    // the login (any case); a login the filter matched by another attribute
    // is refused, naming the fix, in the log and in `test`.
    let upn = env.config_for(HOST, "use_ssl = true", "", DOVECOT);
    let text = std::fs::read_to_string(&upn).unwrap().replace(
        "username_field = \"sAMAccountName\"",
        "username_field = \"userPrincipalName\"",
    );
    let upn = write_config(env.path(), "upn.toml", &text);
    for login in ["alice@corp.example.org", "ALICE@Corp.Example.Org"] {
        let r = env.dc.login(&upn, login, ALICE.password, &env.reply);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(
            env.reply.var("USER").as_deref(),
            Some("alice@corp.example.org")
        );
    }
    let fix = "whose userprincipalname values do not include it: set provisioning.mail_field";
    let r = env.dc.login(&upn, "alice", ALICE.password, &env.reply);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(fix), "{r:?}");
    let t = env
        .dc
        .admin(&upn, &["test", "alice"], &format!("{}\n", ALICE.password));
    assert_eq!(t.code, 1, "{t:?}");
    assert!(t.stdout.contains(fix), "{}", t.stdout);

    // With [database]: the same user, and one mailbox for all the logins.
    let db = mailcow_db();
    let with_db = env.config(&provisioning(&db), DOVECOT);
    assert_one_user(&env, &with_db, ALICE.mail);
    assert_eq!(
        db.value("SELECT GROUP_CONCAT(username) FROM mailbox"),
        ALICE.mail,
        "one mailbox"
    );

    // serve, in the DC's namespace, reached through a forwarded port.
    let (section, ns_port, socket) = Serve::section(env.path(), "");
    for (name, base) in [("serve-nodb.toml", &cfg), ("serve-db.toml", &with_db)] {
        let text = format!("{}\n{section}", std::fs::read_to_string(base).unwrap());
        let serve_cfg = write_config(env.path(), name, &text);
        let fwd = env.dc.forward(ns_port);
        let mut serve = Serve::start_cmd(env.dc.in_ns(bin()), &serve_cfg, fwd.port, socket.clone());
        for login in ALICE_LOGINS.iter().chain(ALICE_VARIANTS) {
            let r = serve.auth(login, ALICE.password, "imap");
            if ALICE_VARIANTS.contains(login) && r.status != 200 {
                continue;
            }
            assert_eq!(r.status, 200, "{name} {login}: {r:?}");
            assert_eq!(r.json["user"], ALICE.mail, "{name} {login}: {r:?}");
        }
        serve.stop();
        let _ = std::fs::remove_file(&socket);
    }
}

#[test]
fn connection_test_hints_fit_active_directory() {
    let env = Env::new();
    // Plain LDAP: AD (and Samba) refuse simple binds without encryption (result 8).
    let plain = env.config_for(HOST, "use_ssl = false", "", "");
    let r = env.dc.login(&plain, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 111, "{r:?}");
    assert!(
        r.stderr
            .contains("encryption required (result code 8): set ldap.use_ssl or ldap.use_tls"),
        "{r:?}"
    );
    let t = env.dc.admin(&plain, &["connection-test"], "");
    assert_eq!(t.code, 1, "{t:?}");
    assert!(
        t.stdout.contains("fix: use ldap.use_tls (StartTLS) or ldap.use_ssl (LDAPS); the bind DN and password are not the problem"),
        "{}",
        t.stdout
    );
    assert!(!t.stdout.contains("check ldap.bind_dn"), "{}", t.stdout);

    // A wrong service password: the hint warns about the lockout threshold.
    let text = std::fs::read_to_string(env.config("", "")).unwrap();
    let bad = write_config(
        env.path(),
        "bad.toml",
        &text.replace(SVC_PW, "Not-The-Pass-1"),
    );
    let t = env.dc.admin(&bad, &["connection-test"], "");
    assert_eq!(t.code, 1, "{t:?}");
    assert!(
        t.stdout.contains("refused (invalid credentials)"),
        "{}",
        t.stdout
    );
    assert!(
        t.stdout
            .contains("counts against the service account's lockout threshold on Active Directory"),
        "{}",
        t.stdout
    );
    let r = env.dc.login(&bad, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 111, "{r:?}");
    assert!(
        r.stderr
            .contains("each attempt counts toward AD's lockout threshold"),
        "{r:?}"
    );
    assert_eq!(
        env.dc.read_attr("(sAMAccountName=mailsvc)", "badPwdCount"),
        ["2"],
        "each attempt counted"
    );
    // Locked out (the threshold reached), the service bind says so.
    let r = env.dc.login(&bad, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 111, "{r:?}");
    let t = env.dc.admin(&env.config("", ""), &["connection-test"], "");
    assert_eq!(t.code, 1, "{t:?}");
    assert!(
        t.stdout
            .contains("refused (account locked out (Active Directory: data 775))"),
        "{}",
        t.stdout
    );
}

#[test]
fn nested_groups_in_the_filter_and_the_global_catalog() {
    let env = Env::new();
    // The README's filter for members of a group, nested membership included
    // (LDAP_MATCHING_RULE_IN_CHAIN): alice is in "All Mail" through "Mail Staff".
    let nested = format!(
        "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2))(memberOf:1.2.840.113556.1.4.1941:={OUTER_GROUP_DN})(|(sAMAccountName=%u)(userPrincipalName=%u)(mail=%u)))"
    );
    let cfg = env.config("", "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(AD_FILTER, &nested);
    let cfg = write_config(env.path(), "nested.toml", &text);
    let r = env.dc.login(&cfg, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 0, "{r:?}");
    let r = env.dc.login(&cfg, BOB.sam, BOB.password, &env.reply);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("reason=\"unknown user\""), "{r:?}");
    // A plain memberOf equality does not see nested membership.
    let direct = text.replace("memberOf:1.2.840.113556.1.4.1941:=", "memberOf=");
    let direct = write_config(env.path(), "direct.toml", &direct);
    let r = env.dc.login(&direct, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 1, "{r:?}");

    // The global catalog over LDAPS (3269): the same logins.
    let gc = env.config_for(&format!("{HOST}:3269"), "use_ssl = true", "", "");
    let r = env.dc.login(&gc, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("host=dc1.corp.example.org:3269"), "{r:?}");
    let r = env.dc.login(&gc, ALICE.sam, "Wrong-Pass-1", &env.reply);
    assert_eq!(r.code, 1, "{r:?}");
}

/// The lockout arithmetic at a real directory: through serve (HTTP, as the
/// Lua passdb asks, `passdb = "full"` with mailcow's database), each wrong
/// password costs the user exactly +1 `badPwdCount` (Samba's, read as
/// Administrator); an app-password login and a refusal of an inactive
/// mailbox cost +0, whatever the password.
#[test]
fn bad_password_count_rises_once_per_wrong_password_through_serve() {
    let env = Env::new();
    let db = mailcow_db();
    let cfg = env.config(&provisioning(&db), DOVECOT);
    let (section, ns_port, socket) = Serve::section(env.path(), "");
    let text = format!("{}\n{section}", std::fs::read_to_string(&cfg).unwrap());
    let serve_cfg = write_config(env.path(), "serve-badpwd.toml", &text);
    let fwd = env.dc.forward(ns_port);
    let mut serve = Serve::start_cmd(env.dc.in_ns(bin()), &serve_cfg, fwd.port, socket);
    let count = || -> usize {
        env.dc
            .read_attr(&format!("(sAMAccountName={})", BOB.sam), "badPwdCount")
            .first()
            .map_or(0, |v| v.parse().unwrap())
    };
    let login = |pw: &str, service: &str| -> (u16, isize) {
        let before = count();
        let r = serve.auth(BOB.mail, pw, service);
        let delta = count() as isize - before as isize;
        println!(
            "{service} {}: HTTP {} badPwdCount {before} -> +{delta}",
            r.status, r.json
        );
        (r.status, delta)
    };

    // The first login creates the mailbox (and a good bind leaves the count at 0).
    assert_eq!(login(BOB.password, "imap"), (200, 0));
    assert_eq!(count(), 0);
    // Below the lockout threshold (3): each wrong password once.
    const { assert!(LOCKOUT_THRESHOLD > 2) };
    assert_eq!(
        login("Wrong-Pass-1", "imap"),
        (401, 1),
        "one wrong password, +1"
    );
    assert_eq!(
        login("Wrong-Pass-2", "smtp"),
        (401, 1),
        "one wrong password, +1"
    );

    // An app password: no bind, so +0 (and the count is not reset either).
    let hash = crate::passdb::dovecot_hash("BLF-CRYPT", "Bob-App-Pass-1");
    db.sql(&format!(
        "INSERT INTO app_passwd (name, mailbox, domain, password, active) \
         VALUES ('phone', '{}', 'corp.example.org', '{hash}', 1)",
        BOB.mail
    ));
    assert_eq!(login("Bob-App-Pass-1", "imap"), (200, 0), "app password");
    assert_eq!(count(), 2);

    // An address the directory does not hold: its search finds nothing, and
    // the equal-time bind names a DN that cannot exist, so no real account
    // counts it: +0 for Bob and for the service account.
    let svc = || env.dc.read_attr("(sAMAccountName=mailsvc)", "badPwdCount");
    let svc_before = svc();
    for pw in ["Wrong-Pass-4", BOB.password] {
        let r = serve.auth("nobody.else@corp.example.org", pw, "imap");
        assert_eq!(r.status, 401, "unknown user: {r:?}");
    }
    assert_eq!(count(), 2, "an unknown user's bind counted against Bob");
    assert_eq!(
        svc(),
        svc_before,
        "an unknown user's bind counted against the service account"
    );

    // An inactive mailbox is refused before the bind: +0 for any password.
    db.sql(&format!(
        "UPDATE mailbox SET active = 0 WHERE username = '{}'",
        BOB.mail
    ));
    assert_eq!(login("Wrong-Pass-3", "imap"), (401, 0), "inactive mailbox");
    assert_eq!(login(BOB.password, "imap"), (401, 0), "inactive mailbox");
    assert_eq!(
        count(),
        2,
        "never locked out by refusals the directory did not see"
    );
    serve.stop();
}

/// Modify the entry `rdns` (its DN up to the domain's base, e.g.
/// `CN=alice,OU=Staff`) as Administrator; `change` is the LDIF after
/// `changetype: modify`.
fn modify_entry(env: &Env, rdns: &str, change: &str) {
    env.dc.ldap_tool(
        "ldapmodify",
        &format!(
            "dn: {rdns},{}\nchangetype: modify\n{change}",
            crate::support::samba::BASE
        ),
    );
}

/// `department` on an AD user in OU=Staff, replaced as Administrator.
fn set_department(env: &Env, cn: &str, value: &str) {
    modify_entry(
        env,
        &format!("CN={cn},OU=Staff"),
        &format!("replace: department\ndepartment: {value}\n-\n"),
    );
}

/// A mailbox's `active` and the tool's retirement mark (`-` when none).
fn active_and_mark(db: &Db, user: &str) -> String {
    db.value(&format!(
        "SELECT CONCAT(active, '/', COALESCE(JSON_UNQUOTE(JSON_EXTRACT(attributes, '$.ldap_retired')), '-'), \
         '/', (SELECT active FROM alias WHERE address = '{user}')) FROM mailbox WHERE username = '{user}'"
    ))
}

/// Offboarding in the directory (issue 19, part 2): `department: left`
/// disallows login (active 2), `department: gone` deactivates (active 0),
/// at login and by sync; a value that maps to a template again makes the
/// mailbox active 1; an admin's own deactivation is never touched, and a
/// user whose value retires them gets no new mailbox. On the old code the
/// `action` key is refused as unknown.
#[test]
fn a_retiring_directory_value_sets_active_and_a_template_value_restores_it() {
    let env = Env::new();
    let db = mailcow_db();
    let mapping = format!(
        "attribute_field = \"department\"\n\n\
         [[attribute_mapping]]\nattribute = \"left\"\naction = \"disallow_login\"\n\n\
         [[attribute_mapping]]\nattribute = \"gone\"\naction = \"deactivate\"\n\n\
         [[attribute_mapping]]\nattribute = \"staff\"\ntemplate = \"Staff\"\n\n\
         [provisioning]\nmail_field = \"mail\"\ndefault_template = \"Default\"\n\n{}\n\
         [sync]\nimport_users = true\nperiodic_full_sync = true\n",
        db.socket_section()
    );
    let cfg = env.config(&mapping, DOVECOT);
    let login = |user: &AdUser, pw: &str| env.dc.login(&cfg, user.sam, pw, &env.reply);

    // A new user whose value retires them: no mailbox, at login or by sync.
    set_department(&env, "eve", "gone");
    set_department(&env, "larry", "staff");
    let r = env.dc.admin(&cfg, &["sync", "--force"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "skip {}: the directory value \"gone\" retires it (action deactivate): no mailbox is created",
            EVE_EXPIRED.mail
        )),
        "{}",
        r.stdout
    );
    assert_eq!(
        db.value(&format!(
            "SELECT COUNT(*) FROM mailbox WHERE username = '{}'",
            EVE_EXPIRED.mail
        )),
        "0"
    );
    assert_eq!(active_and_mark(&db, LARRY.mail), "1/-/1");

    // At login: refused after the bind, active 2 with the mark; still
    // refused next time; a wrong password stays a wrong password. The bind
    // verified the password, so the user is told (messages.login_disabled):
    // the reply program runs with nologin and the reason.
    set_department(&env, "larry", "left");
    let told = "Login is disabled for this mailbox. Please contact your administrator.";
    let r = login(&LARRY, LARRY.password);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("the directory value \\\"left\\\" retires the mailbox (action disallow_login, active 2)")
            && r.stderr.contains("result=reject"),
        "{r:?}"
    );
    assert_eq!(env.reply.var("nologin").as_deref(), Some("Y"));
    assert_eq!(env.reply.var("reason").as_deref(), Some(told));
    assert_eq!(active_and_mark(&db, LARRY.mail), "2/2/1");
    let r = login(&LARRY, LARRY.password);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(env.reply.var("reason").as_deref(), Some(told));
    let r = login(&LARRY, "Wrong-Pass-1");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(env.reply.env().is_none(), "{r:?}");
    assert!(r.stderr.contains("reason=\"wrong password\""), "{r:?}");
    assert_eq!(active_and_mark(&db, LARRY.mail), "2/2/1");
    // The template value again: the login itself makes it active 1.
    set_department(&env, "larry", "staff");
    let r = login(&LARRY, LARRY.password);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(active_and_mark(&db, LARRY.mail), "1/-/1");

    // By sync, dry run first; an admin's deactivation (alice) is left alone.
    db.sql(&format!(
        "UPDATE mailbox SET active = 0 WHERE username = '{}'",
        ALICE.mail
    ));
    set_department(&env, "alice", "left");
    set_department(&env, "larry", "gone");
    let r = env.dc.admin(&cfg, &["sync", "--force", "--dry-run"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "would set {} to active 0 (directory value \"gone\": action deactivate)",
            LARRY.mail
        )),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains(&format!("set {} to", ALICE.mail)),
        "{}",
        r.stdout
    );
    assert_eq!(active_and_mark(&db, LARRY.mail), "1/-/1", "dry run wrote");
    let r = env.dc.admin(&cfg, &["sync", "--force"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("retired by a directory value 1, reactivated from that 0"),
        "{}",
        r.stdout
    );
    assert_eq!(active_and_mark(&db, LARRY.mail), "0/0/0");
    assert_eq!(active_and_mark(&db, ALICE.mail), "0/-/1");
    // Back to a template value: sync restores larry, alice stays as the admin set her.
    set_department(&env, "larry", "staff");
    set_department(&env, "alice", "staff");
    let r = env.dc.admin(&cfg, &["sync", "--force"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("retired by a directory value 0, reactivated from that 1"),
        "{}",
        r.stdout
    );
    assert_eq!(active_and_mark(&db, LARRY.mail), "1/-/1");
    assert_eq!(active_and_mark(&db, ALICE.mail), "0/-/1");
}

/// The case end to end: an IMAP LOGIN through the suite's Dovecot
/// (checkpassword passdb and userdb, Debian's checkpassword-reply) against
/// the Samba DC. A user whose password expired (data 532) or who must change
/// it (data 773) gets the configured text in the `NO`; an expired account
/// (701) the default one; a wrong password, and a locked-out account,
/// Dovecot's usual failure.
/// Dovecot runs in the test's network namespace, in a mount namespace of its
/// own where /etc/hosts names the DC (its certificate's name) on loopback,
/// with the DC's LDAPS port forwarded there.
#[test]
fn imap_login_through_dovecot_shows_the_reason_and_a_wrong_password_the_usual_failure() {
    use crate::support::clients::imap_login;
    use crate::support::dovecot::{default_auth, Dovecot};
    use crate::support::samba::{BASE, SVC_DN};
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let root = env.path();
    let fwd = env.dc.forward(636);
    let readable = |p: &Path| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    // Dovecot runs the helper as user `dovecot`: the CA where it can read it.
    let ca = root.join("samba-ca.pem");
    std::fs::copy(&env.dc.ca, &ca).unwrap();
    readable(&ca);
    let hosts = root.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {HOST}\n")).unwrap();
    readable(&hosts);
    let body = format!(
        "[ldap]\nhosts = \"{HOST}:{}\"\nuse_ssl = true\nca_file = \"{}\"\nbase_dn = \"{BASE}\"\n\
         bind_dn = \"{SVC_DN}\"\nbind_password = \"{SVC_PW}\"\nusername_field = \"sAMAccountName\"\n\
         filter = \"{ANY_ACCOUNT_FILTER}\"\nconnect_timeout_ms = 3000\ntimeout_ms = 5000\n{MESSAGES}",
        fwd.port,
        ca.display()
    );
    let dovecot = Dovecot::start_mounted(
        root,
        &body,
        default_auth,
        vec![(hosts, PathBuf::from("/etc/hosts"))],
    );
    let imap = dovecot.imap_port;
    let r = imap_login(imap, ALICE.sam, ALICE.password);
    assert!(r.starts_with("OK"), "{r}\n{}", dovecot.log());

    let r = imap_login(imap, MIKE_MUST_CHANGE.sam, MIKE_MUST_CHANGE.password);
    println!("LOGIN of a user who must change the password: {r}");
    assert!(
        r.starts_with("NO")
            && r.contains("Change your password at https://id.corp.example.org/ first.")
            && !r.contains("AUTHENTICATIONFAILED"),
        "{r}\n{}",
        dovecot.log()
    );
    // The case: an expired AD password (data 532), the configured text.
    let r = imap_login(
        imap,
        PAT_PASSWORD_EXPIRED.sam,
        PAT_PASSWORD_EXPIRED.password,
    );
    println!("LOGIN of a user whose password expired: {r}");
    assert!(
        r.starts_with("NO")
            && r.contains("Your password has expired: change it at https://id.corp.example.org/")
            && !r.contains("AUTHENTICATIONFAILED"),
        "{r}\n{}",
        dovecot.log()
    );
    let r = imap_login(imap, EVE_EXPIRED.sam, EVE_EXPIRED.password);
    assert!(
        r.starts_with("NO")
            && r.contains("Your account has expired. Please contact your administrator."),
        "{r}\n{}",
        dovecot.log()
    );
    for (user, pw) in [
        (MIKE_MUST_CHANGE.sam, "Wrong-Pass-1"),
        (EVE_EXPIRED.sam, "Wrong-Pass-1"),
        (PAT_PASSWORD_EXPIRED.sam, "Wrong-Pass-1"),
        // messages.account_disabled = "": the usual failure, right password or not.
        (DORA_DISABLED.sam, DORA_DISABLED.password),
    ] {
        let r = imap_login(imap, user, pw);
        assert_eq!(
            r,
            "NO [AUTHENTICATIONFAILED] Authentication failed.",
            "{user}\n{}",
            dovecot.log()
        );
    }
    // Locked out: AD says so whatever the password, so nothing is told.
    for _ in 0..LOCKOUT_THRESHOLD {
        assert!(imap_login(imap, LARRY.sam, "Wrong-Pass-1").starts_with("NO"));
    }
    let r = imap_login(imap, LARRY.sam, LARRY.password);
    assert_eq!(
        r,
        "NO [AUTHENTICATIONFAILED] Authentication failed.",
        "{}",
        dovecot.log()
    );
    println!("{}", dovecot.log());
}

/// Alice's and Bob's aliases besides their own address, with the tool's
/// mark: address, goto, domain, active, whether ours.
fn ad_aliases(db: &Db) -> Vec<String> {
    db.sql(&format!(
        "SELECT address, goto, domain, active, private_comment <=> '{}' FROM alias \
         WHERE address != goto ORDER BY address",
        mailcow_ldap_auth::mailcow::DIRECTORY_ALIAS_MARK
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Issue 19, part 1, against AD: `alias_attributes = ["proxyAddresses"]`.
/// `SMTP:` (the primary, the mailbox's own address, any case) skipped,
/// `smtp:` values lower-cased into aliases, `X500:` and `SIP:` skipped, a
/// domain mailcow does not have skipped, an alias domain accepted, an
/// admin's alias to someone else left as it is; at first login and by sync,
/// following an addition and a removal in the directory. On the old code
/// `alias_attributes` is refused as an unknown key.
#[test]
fn proxy_addresses_become_aliases_at_login_and_by_sync() {
    let env = Env::new();
    let db = mailcow_db();
    db.sql(
        "UPDATE domain SET aliases = 400;\
         INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('alias.corp.example', 'corp.example.org');\
         INSERT INTO alias (address, goto, domain, private_comment) VALUES ('hand@corp.example.org', 'someone@corp.example.org', 'corp.example.org', 'made by an admin');",
    );
    modify_entry(
        &env,
        "CN=alice,OU=Staff",
        "add: proxyAddresses\n\
         proxyAddresses: SMTP:Alice.Liddell@CORP.example.org\n\
         proxyAddresses: smtp:Al@Corp.Example.Org\n\
         proxyAddresses: smtp:al@alias.corp.example\n\
         proxyAddresses: X500:/o=Corp/ou=Exchange/cn=Recipients/cn=alice\n\
         proxyAddresses: SIP:alice@corp.example.org\n\
         proxyAddresses: smtp:alice@unknown.example\n\
         proxyAddresses: smtp:hand@corp.example.org\n",
    );
    let cfg = env.config(
        &provisioning(&db),
        "[mailcow]\nalias_attributes = [\"proxyAddresses\"]\n",
    );
    let ours = |a: &str, domain: &str| format!("{a}\t{}\t{domain}\t1\t1", ALICE.mail);
    let hand = "hand@corp.example.org\tsomeone@corp.example.org\tcorp.example.org\t1\t0";

    // First login: the mailbox and its aliases.
    let r = env.dc.login(&cfg, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        ad_aliases(&db),
        [
            ours("al@alias.corp.example", "alias.corp.example"),
            ours("al@corp.example.org", "corp.example.org"),
            hand.to_owned(),
        ],
        "{r:?}"
    );
    assert!(
        r.stderr.contains(
            "hand@corp.example.org -> someone@corp.example.org was not made by mailcow-ldap-auth"
        ),
        "the admin's alias is named with both owners: {}",
        r.stderr
    );

    // An addition and a removal in the directory, and a user who never
    // logged in: the dry run shows them and writes nothing, sync does them.
    modify_entry(
        &env,
        "CN=alice,OU=Staff",
        "delete: proxyAddresses\nproxyAddresses: smtp:Al@Corp.Example.Org\n-\n\
         add: proxyAddresses\nproxyAddresses: smtp:New@corp.example.org\n",
    );
    modify_entry(
        &env,
        "CN=Builder\\, Bob,OU=Sales,OU=Staff",
        "add: proxyAddresses\nproxyAddresses: SMTP:bob@corp.example.org\nproxyAddresses: smtp:builder@corp.example.org\n",
    );
    let before = db.sql("SELECT address, goto, active, modified FROM alias ORDER BY address");
    let r = env.dc.admin(&cfg, &["sync", "--force", "--dry-run"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "alias new@corp.example.org -> {} added",
            ALICE.mail
        )) && r.stdout.contains(&format!(
            "alias al@corp.example.org -> {} removed",
            ALICE.mail
        )),
        "{}",
        r.stdout
    );
    assert_eq!(
        db.sql("SELECT address, goto, active, modified FROM alias ORDER BY address"),
        before,
        "a dry run writes nothing"
    );
    let r = env.dc.admin(&cfg, &["sync", "--force"], "");
    assert_eq!(r.code, 0, "{r:?}");
    // TOOLONG's mailbox cannot be made (see the sync test): that user fails, no one else.
    assert!(r.stdout.contains("failed 1"), "{}", r.stdout);
    assert_eq!(
        ad_aliases(&db),
        [
            ours("al@alias.corp.example", "alias.corp.example"),
            format!(
                "builder@corp.example.org\t{}\tcorp.example.org\t1\t1",
                BOB.mail
            ),
            hand.to_owned(),
            ours("new@corp.example.org", "corp.example.org"),
        ],
        "{}",
        r.stdout
    );
    // A domain mailcow lacks is named; values of another type (X500:, SIP:)
    // are not mail and normal in AD: skipped without a word each run.
    assert!(
        r.stdout.contains(&format!(
            "alias alice@unknown.example for {} skipped: its domain is neither",
            ALICE.mail
        )) && !r.stdout.contains("X500")
            && !r.stdout.contains("SIP:"),
        "{}",
        r.stdout
    );
    assert_eq!(
        r.stdout
            .matches("alias hand@corp.example.org: wanted by the directory")
            .count(),
        1,
        "the conflict once per run: {}",
        r.stdout
    );

    // A removal seen at the next login.
    modify_entry(
        &env,
        "CN=alice,OU=Staff",
        "delete: proxyAddresses\nproxyAddresses: smtp:al@alias.corp.example\n",
    );
    let r = env.dc.login(&cfg, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        ad_aliases(&db),
        [
            format!(
                "builder@corp.example.org\t{}\tcorp.example.org\t1\t1",
                BOB.mail
            ),
            hand.to_owned(),
            ours("new@corp.example.org", "corp.example.org"),
        ]
    );
}
