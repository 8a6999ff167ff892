//! Login provisioning against a real slapd and a real MariaDB with the
//! mailcow schema subset: every row a first login writes, updates, limits,
//! access flags and races.

use crate::support::mariadb::Db;
use crate::support::slapd::{BASE, HMUELLER_PW, READER_DN, READER_PW};
use crate::support::{
    admin, checkpassword, creds, free_port, lookup, write_config, Run, Slapd, StubReply,
};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The Default template as mailcow's init_db writes it (quota 0 = the domain's default).
pub const DEFAULT_TEMPLATE: &str = r#"{"tags":[],"quota":0,"quarantine_notification":"hourly","quarantine_category":"reject","rl_frame":"s","rl_value":"","force_pw_update":0,"sogo_access":1,"active":1,"tls_enforce_in":0,"tls_enforce_out":0,"imap_access":1,"pop3_access":1,"smtp_access":1,"sieve_access":1,"acl_spam_alias":1,"acl_tls_policy":1,"acl_spam_score":1,"acl_spam_policy":1,"acl_delimiter_action":1,"acl_syncjobs":0,"acl_eas_reset":1,"acl_sogo_profile_reset":0,"acl_pushover":1,"acl_quarantine":1,"acl_quarantine_attachments":1,"acl_quarantine_notification":1,"acl_quarantine_category":1,"acl_app_passwds":1}"#;

/// A staff template: 1 GiB, POP3 off, a tag, syncjobs allowed.
pub const STAFF_TEMPLATE: &str = r#"{"tags":["staff","ldap"],"quota":1073741824,"quarantine_notification":"daily","quarantine_category":"reject","force_pw_update":0,"sogo_access":1,"active":1,"tls_enforce_in":1,"tls_enforce_out":0,"imap_access":1,"pop3_access":0,"smtp_access":1,"sieve_access":1,"acl_spam_alias":1,"acl_syncjobs":1,"acl_app_passwds":0}"#;

pub struct Env {
    pub dir: TempDir,
    pub slapd: Slapd,
    pub db: Db,
    pub reply: StubReply,
}

impl Env {
    pub fn new() -> Env {
        let dir = TempDir::new().unwrap();
        let slapd = Slapd::start(dir.path());
        let db = Db::new();
        db.sql(&format!(
            "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active) VALUES ('example.org', 10, 3072, 10240, 102400, 1);\
             INSERT INTO templates (template, type, attributes) VALUES ('Default', 'mailbox', '{DEFAULT_TEMPLATE}'), ('Staff', 'mailbox', '{STAFF_TEMPLATE}');"
        ));
        let reply = StubReply::create(dir.path());
        Env {
            dir,
            slapd,
            db,
            reply,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Config: this slapd, this database, `attribute_field = otherMailbox`,
    /// mapping "default" -> Default and "staff-only" -> Staff, plus `extra` (TOML, top level of sections).
    pub fn config_with(&self, ldap_extra: &str, rest: &str) -> PathBuf {
        let text = format!(
            "state_dir = \"{}\"\n{}attribute_field = \"otherMailbox\"\n{ldap_extra}\n{}\n\
             [dovecot]\nuid = \"5000\"\ngid = \"5000\"\n\n\
             [[attribute_mapping]]\nattribute = \"staff-only\"\ntemplate = \"Staff\"\n\n\
             [[attribute_mapping]]\nattribute = \"default\"\ntemplate = \"Default\"\n\n{rest}\n",
            self.path().display(),
            self.slapd.ldap_section(),
            self.db.section(),
        );
        write_config(self.path(), "config.toml", &text)
    }

    pub fn config(&self) -> PathBuf {
        self.config_with("", "")
    }

    pub fn login_as(&self, cfg: &Path, user: &str, pw: &str, service: &str) -> Run {
        checkpassword(cfg, &creds(user, pw), &[("SERVICE", service)], &self.reply)
    }

    pub fn login(&self, cfg: &Path, user: &str, pw: &str) -> Run {
        self.login_as(cfg, user, pw, "imap")
    }

    pub fn count(&self, table: &str) -> usize {
        self.db
            .value(&format!("SELECT COUNT(*) FROM {table}"))
            .parse()
            .unwrap()
    }

    /// A fingerprint of every row the tool may write.
    pub fn snapshot(&self) -> String {
        self.db.sql(
            "SELECT username, name, quota, attributes, active, authsource, modified FROM mailbox ORDER BY username;\
             SELECT address, goto, active FROM alias ORDER BY address;\
             SELECT * FROM user_acl ORDER BY username;\
             SELECT * FROM tags_mailbox ORDER BY username, tag_name;\
             SELECT * FROM quota2; SELECT * FROM quota2replica;",
        )
    }
}

fn php_hash(text: &str) -> String {
    mailcow_ldap_auth::provision::template_hash(text)
}

#[test]
fn first_login_writes_every_row_and_nothing_else() {
    let e = Env::new();
    let cfg = e.config();
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.reply.var("USER").as_deref(), Some("jdoe@example.org"));
    // Default template: quota 0 is unlimited, as in mailcow (never the
    // domain's defquota of 3072 MiB): no quota rule.
    let quota = 0;
    assert_eq!(e.reply.var("userdb_quota_rule"), None);
    assert_eq!(
        e.reply.var("EXTRA").as_deref(),
        Some("userdb_uid userdb_gid userdb_home")
    );
    let row = e.db.sql(
        "SELECT username, password, name, quota, local_part, domain, authsource, active FROM mailbox",
    );
    assert_eq!(
        row.trim(),
        format!("jdoe@example.org\t\tJohn Doe\t{quota}\tjdoe\texample.org\tldap\t1")
    );
    let attrs: serde_json::Value =
        serde_json::from_str(&e.db.value("SELECT attributes FROM mailbox")).unwrap();
    assert_eq!(attrs["attribute_hash"], php_hash(DEFAULT_TEMPLATE));
    assert_eq!(attrs["imap_access"], "1");
    assert_eq!(attrs["pop3_access"], "1");
    assert_eq!(attrs["mailbox_format"], "maildir:");
    assert_eq!(attrs["quarantine_notification"], "hourly");
    assert_eq!(
        e.db.value("SELECT CONCAT(bytes, '/', messages) FROM quota2"),
        "0/0"
    );
    assert_eq!(
        e.db.value("SELECT CONCAT(bytes, '/', messages) FROM quota2replica"),
        "0/0"
    );
    assert_eq!(
        e.db.value("SELECT CONCAT(address, '>', goto, '>', domain, '>', active) FROM alias"),
        "jdoe@example.org>jdoe@example.org>example.org>1"
    );
    // Every column as mailcow's mailbox('add') writes it from the Default
    // template; it has no acl_pw_reset, so pw_reset is 0 (not the column's 1).
    assert_eq!(
        e.db.sql("SELECT spam_alias, tls_policy, spam_score, spam_policy, delimiter_action, syncjobs, eas_reset, \
                  sogo_profile_reset, pushover, quarantine, quarantine_attachments, quarantine_notification, \
                  quarantine_category, app_passwds, pw_reset FROM user_acl WHERE username = 'jdoe@example.org'")
            .trim(),
        "1\t1\t1\t1\t1\t0\t1\t0\t1\t1\t1\t1\t1\t1\t0"
    );
    for (table, n) in [
        ("mailbox", 1),
        ("alias", 1),
        ("quota2", 1),
        ("quota2replica", 1),
        ("user_acl", 1),
        ("tags_mailbox", 0),
        ("app_passwd", 0),
        ("domain", 1),
    ] {
        assert_eq!(e.count(table), n, "{table}");
    }
    // A second login changes nothing.
    let before = e.snapshot();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    assert_eq!(e.snapshot(), before);
}

#[test]
fn changed_template_updates_the_mailbox_once() {
    let e = Env::new();
    let cfg = e.config();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    // The admin edits the Default template: quota, a flag, an ACL and a tag.
    let changed = DEFAULT_TEMPLATE
        .replace("\"quota\":0", "\"quota\":2147483648")
        .replace("\"pop3_access\":1", "\"pop3_access\":0")
        .replace("\"acl_syncjobs\":0", "\"acl_syncjobs\":1")
        .replace("\"tags\":[]", "\"tags\":[\"updated\"]");
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{changed}' WHERE template = 'Default'"
    ));
    e.db.sql("UPDATE mailbox SET active = 1"); // untouched by the update below
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.db.value("SELECT quota FROM mailbox"), "2147483648");
    assert_eq!(
        e.reply.var("userdb_quota_rule").as_deref(),
        Some("*:bytes=2147483648")
    );
    let attrs: serde_json::Value =
        serde_json::from_str(&e.db.value("SELECT attributes FROM mailbox")).unwrap();
    assert_eq!(attrs["pop3_access"], "0");
    assert_eq!(attrs["attribute_hash"], php_hash(&changed));
    assert_eq!(e.db.value("SELECT syncjobs FROM user_acl"), "1");
    assert_eq!(
        e.db.value("SELECT GROUP_CONCAT(tag_name) FROM tags_mailbox"),
        "updated"
    );
    // Once: the next login writes nothing.
    let before = e.snapshot();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    assert_eq!(e.snapshot(), before);
    // POP3 is now off for this mailbox, IMAP still on.
    assert_eq!(
        e.login_as(&cfg, "jdoe@example.org", "secret1", "pop3").code,
        1
    );
}

#[test]
fn mapping_order_multi_values_and_default_template() {
    let e = Env::new();
    // Mapping by a value that is not the first: jdoe has otherMailbox staff, default.
    e.slapd.modify(
        "dn: uid=jdoe,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: otherMailbox\notherMailbox: staff\notherMailbox: default\notherMailbox: staff-only\n",
    );
    let cfg = e.config();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    // The first mapping in config order that matches any value wins: Staff.
    assert_eq!(e.db.value("SELECT quota FROM mailbox"), "1073741824");
    assert_eq!(
        e.db.value("SELECT GROUP_CONCAT(tag_name ORDER BY tag_name) FROM tags_mailbox"),
        "ldap,staff"
    );
    // A user whose value maps to nothing is refused, and nothing is written.
    let r = e.login(&cfg, "nomail@example.org", "nomailpw");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("no attribute mapping matched"),
        "{}",
        r.stderr
    );
    assert_eq!(e.count("mailbox"), 1);
    // With a default template the same user gets a mailbox.
    let cfg = e.config_with("", "[provisioning]\ndefault_template = \"Default\"\n");
    assert_eq!(e.login(&cfg, "nomail@example.org", "nomailpw").code, 0);
    assert_eq!(e.count("mailbox"), 2);
}

#[test]
fn domain_problems_reject_without_rows() {
    let e = Env::new();
    let cfg = e.config();
    // Missing domain.
    e.slapd.add("dn: uid=other,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nobjectClass: extensibleObject\nuid: other\ncn: Other\nsn: O\nmail: other@other.org\notherMailbox: default\nuserPassword: otherpw\n");
    let r = e.login(&cfg, "other@other.org", "otherpw");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    // Inactive domain.
    e.db.sql("INSERT INTO domain (domain, mailboxes, active) VALUES ('other.org', 10, 0)");
    let r = e.login(&cfg, "other@other.org", "otherpw");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("inactive"), "{}", r.stderr);
    // Max mailboxes reached.
    e.db.sql("UPDATE domain SET active = 1, mailboxes = 0 WHERE domain = 'other.org'");
    let r = e.login(&cfg, "other@other.org", "otherpw");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("Max. possible mailboxes"), "{}", r.stderr);
    // Quota over the per-mailbox maximum, then over what is left of the domain
    // (a template of 3072 MiB: quota 0 is unlimited and fits any domain).
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{}' WHERE template = 'Default'",
        DEFAULT_TEMPLATE.replace("\"quota\":0", "\"quota\":3221225472")
    ));
    e.db.sql("UPDATE domain SET mailboxes = 10, maxquota = 1024, quota = 102400 WHERE domain = 'other.org'");
    let r = e.login(&cfg, "other@other.org", "otherpw");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("per-mailbox maximum"), "{}", r.stderr);
    e.db.sql("UPDATE domain SET maxquota = 10240, quota = 2048 WHERE domain = 'other.org'");
    let r = e.login(&cfg, "other@other.org", "otherpw");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("left"), "{}", r.stderr);
    assert_eq!(
        e.count("mailbox") + e.count("alias") + e.count("user_acl") + e.count("quota2"),
        0
    );
    // Room again: created.
    e.db.sql("UPDATE domain SET quota = 102400 WHERE domain = 'other.org'");
    assert_eq!(e.login(&cfg, "other@other.org", "otherpw").code, 0);
}

#[test]
fn mailcow_mailbox_is_not_ours_and_ldap_is_not_asked() {
    let mut e = Env::new();
    let cfg = e.config();
    e.db.sql("INSERT INTO mailbox (username, password, name, quota, local_part, domain, attributes, authsource, active) \
              VALUES ('jdoe@example.org', '{SSHA256}x', 'Local', 0, 'jdoe', 'example.org', '{}', 'mailcow', 1)");
    // With slapd stopped, an LDAP attempt would be a temporary failure (111): exit 1 proves none was made.
    e.slapd.stop();
    // The full passdb (the default): the SQL password is checked, and is not this one.
    let r = e.login(&cfg, "JDoe@example.org", "secret1");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("wrong password"), "{}", r.stderr);
    // ldap-only: not ours, for mailcow's passdb to decide.
    let only = e.config_with("", "[mailcow]\npassdb = \"ldap-only\"\n");
    let r = e.login(&only, "JDoe@example.org", "secret1");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("not an LDAP mailbox"), "{}", r.stderr);
    assert_eq!(
        e.db.value("SELECT password FROM mailbox"),
        "{SSHA256}x",
        "the SQL password is never touched"
    );
    // A lookup for it says "unknown" so Dovecot's next userdb answers.
    let r = lookup(&cfg, "jdoe@example.org", &e.reply);
    assert_eq!(r.code, 3, "{r:?}");
}

#[test]
fn inactive_mailbox_stays_inactive_and_service_flags_apply() {
    let e = Env::new();
    let cfg = e.config();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    e.db.sql("UPDATE mailbox SET active = 0");
    // Even with a template change pending, a login does not re-activate it.
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{}' WHERE template = 'Default'",
        DEFAULT_TEMPLATE.replace("\"quota\":0", "\"quota\":1048576")
    ));
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("inactive"), "{}", r.stderr);
    assert_eq!(e.db.value("SELECT active FROM mailbox"), "0");
    let r = lookup(&cfg, "jdoe@example.org", &e.reply);
    assert_eq!(r.code, 3, "lookup of an inactive mailbox: {r:?}");
    // Active 2 is mailcow's "disallow login": the login is refused, the
    // userdb lookup (delivery) still answered, as mailcow's user_login() and
    // Dovecot's user_query (`active = '1' OR active = '2'`) do.
    e.db.sql("UPDATE mailbox SET active = 2");
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("disallow login"), "{}", r.stderr);
    e.reply.reset();
    let r = lookup(&cfg, "jdoe@example.org", &e.reply);
    assert_eq!(
        r.code, 2,
        "lookup of an active 2 mailbox (2: AUTHORIZED=2 reply ran): {r:?}"
    );
    assert_eq!(e.reply.var("USER").as_deref(), Some("jdoe@example.org"));
    // pop3_access "0" rejects POP3 only.
    e.db.sql(
        "UPDATE mailbox SET active = 1, attributes = JSON_SET(attributes, '$.pop3_access', '0')",
    );
    assert_eq!(
        e.login_as(&cfg, "jdoe@example.org", "secret1", "pop3").code,
        1
    );
    assert_eq!(
        e.login_as(&cfg, "jdoe@example.org", "secret1", "imap").code,
        0
    );
    e.db.sql("UPDATE mailbox SET attributes = JSON_SET(attributes, '$.smtp_access', '0')");
    assert_eq!(
        e.login_as(&cfg, "jdoe@example.org", "secret1", "submission")
            .code,
        1
    );
    assert_eq!(
        e.login_as(&cfg, "jdoe@example.org", "secret1", "smtp").code,
        1
    );
    assert_eq!(
        e.login_as(&cfg, "jdoe@example.org", "secret1", "sieve")
            .code,
        0
    );
}

#[test]
fn one_person_one_mailbox_whichever_address_or_case() {
    let e = Env::new();
    let cfg = e.config_with("", "[provisioning]\nmail_field = \"mail\"\n");
    for login in [
        "john.doe@example.org",
        "JDoe@Example.org",
        "jdoe@example.org",
    ] {
        let r = e.login(&cfg, login, "secret1");
        assert_eq!(r.code, 0, "{login}: {r:?}");
        assert_eq!(
            e.reply.var("USER").as_deref(),
            Some("jdoe@example.org"),
            "{login}"
        );
    }
    assert_eq!(e.count("mailbox"), 1);
    // Login by uid, mailbox from mail.
    let cfg = e.config_with(
        "filter = \"(|(uid=%u)(mail=%u))\"\n",
        "[provisioning]\nmail_field = \"mail\"\n",
    );
    assert_eq!(e.login(&cfg, "jdoe", "secret1").code, 0);
    assert_eq!(e.reply.var("USER").as_deref(), Some("jdoe@example.org"));
    assert_eq!(e.count("mailbox"), 1);
    let _ = HMUELLER_PW;
}

#[test]
fn concurrent_first_logins_of_one_user_make_one_mailbox() {
    let e = Env::new();
    let cfg = e.config();
    let dir = e.path().to_owned();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let cfg = cfg.clone();
            let dir = dir.join(format!("r{i}"));
            std::thread::spawn(move || {
                std::fs::create_dir_all(&dir).unwrap();
                let reply = StubReply::create(&dir);
                checkpassword(
                    &cfg,
                    &creds("jdoe@example.org", "secret1"),
                    &[("SERVICE", "imap")],
                    &reply,
                )
            })
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.code, 0, "{r:?}");
    }
    assert_eq!(e.count("mailbox"), 1);
    assert_eq!(e.count("alias"), 1);
    assert_eq!(e.count("user_acl"), 1);
    assert_eq!(e.count("quota2"), 1);
}

#[test]
fn two_users_racing_for_the_last_slot() {
    let e = Env::new();
    e.slapd.add("dn: uid=racer,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nobjectClass: extensibleObject\nuid: racer\ncn: Racer\nsn: R\nmail: racer@example.org\notherMailbox: default\nuserPassword: racerpw\n");
    e.db.sql("UPDATE domain SET mailboxes = 1");
    let cfg = e.config();
    let dir = e.path().to_owned();
    let run = |user: &'static str, pw: &'static str, n: usize| {
        let cfg = cfg.clone();
        let dir = dir.join(format!("race{n}"));
        std::thread::spawn(move || {
            std::fs::create_dir_all(&dir).unwrap();
            let reply = StubReply::create(&dir);
            checkpassword(&cfg, &creds(user, pw), &[("SERVICE", "imap")], &reply)
        })
    };
    let a = run("jdoe@example.org", "secret1", 1);
    let b = run("racer@example.org", "racerpw", 2);
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let mut codes = [a.code, b.code];
    codes.sort();
    assert_eq!(codes, [0, 1], "{a:?}\n{b:?}");
    let loser = if a.code == 1 { &a } else { &b };
    assert!(
        loser.stderr.contains("Max. possible mailboxes"),
        "{}",
        loser.stderr
    );
    assert_eq!(e.count("mailbox"), 1);
    assert_eq!(e.count("alias"), 1);
}

#[test]
fn database_down_is_temporary() {
    let e = Env::new();
    let text = format!(
        "state_dir = \"{}\"\n{}\n[database]\nhost = \"127.0.0.1\"\nport = {}\npassword = \"x\"\nconnect_timeout_ms = 500\n",
        e.path().display(),
        e.slapd.ldap_section(),
        free_port()
    );
    let cfg = write_config(e.path(), "down.toml", &text);
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 111, "{r:?}");
    let r = lookup(&cfg, "jdoe@example.org", &e.reply);
    assert_eq!(r.code, 111, "{r:?}");
}

#[test]
fn lookups_come_from_the_mailbox_table() {
    let e = Env::new();
    let cfg = e.config();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    let r = checkpassword(
        &cfg,
        &creds("JDOE@example.org", ""),
        &[("AUTHORIZED", "1"), ("SERVICE", "lmtp")],
        &e.reply,
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(e.reply.var("USER").as_deref(), Some("jdoe@example.org"));
    assert_eq!(e.reply.var("userdb_quota_rule"), None, "quota 0: unlimited");
    e.db.sql("UPDATE mailbox SET quota = 5242880");
    let r = lookup(&cfg, "jdoe@example.org", &e.reply);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        e.reply.var("userdb_quota_rule").as_deref(),
        Some("*:bytes=5242880")
    );
    let r = lookup(&cfg, "nobody@example.org", &e.reply);
    assert_eq!(r.code, 3, "{r:?}");
}

#[test]
fn settings_from_identity_provider_rows() {
    let e = Env::new();
    e.db.sql(&format!(
        "INSERT INTO identity_provider (`key`, `value`) VALUES ('authsource', 'ldap'), ('host', '127.0.0.1'), \
         ('port', '{}'), ('basedn', '{BASE}'), ('username_field', 'mail'), ('filter', ''), \
         ('attribute_field', 'othermailbox'), ('binddn', '{READER_DN}'), ('bindpass', '{READER_PW}'), \
         ('use_ssl', ''), ('use_tls', ''), ('ignore_ssl_error', ''), ('mappers', '[\"default\"]'), \
         ('templates', '[\"Staff\"]'), ('import_users', '0'), ('periodic_sync', '0'), ('sync_interval', '15')",
        e.slapd.port
    ));
    let text = format!(
        "state_dir = \"{}\"\n{}\n[mailcow]\nsettings_from_database = true\n",
        e.path().display(),
        e.db.section()
    );
    let cfg = write_config(e.path(), "ui.toml", &text);
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    // The UI's mapping "default" -> Staff applied.
    assert_eq!(e.db.value("SELECT quota FROM mailbox"), "1073741824");
    // A key in the file overrides the UI: a wrong port there makes the directory unreachable.
    let text = format!(
        "{text}\n[ldap]\nport = {}\nconnect_timeout_ms = 300\n",
        free_port()
    );
    let cfg = write_config(e.path(), "ui2.toml", &text);
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 111, "{r:?}");
}

#[test]
fn database_over_tls_with_the_test_ca() {
    let e = Env::new();
    let tls = |ca: &Path| {
        format!(
            "state_dir = \"{}\"\n{}attribute_field = \"otherMailbox\"\n{}tls = true\nca_file = \"{}\"\n\
             [[attribute_mapping]]\nattribute = \"default\"\ntemplate = \"Default\"\n",
            e.path().display(),
            e.slapd.ldap_section(),
            e.db.section().replace("127.0.0.1", "localhost").replace("[database]\nhost = \"localhost\"", "[database]\nhost = \"127.0.0.1\""),
            ca.display()
        )
    };
    let cfg = write_config(e.path(), "tls.toml", &tls(e.db.ca()));
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    let other = e.slapd.pki.other_ca.clone();
    let cfg = write_config(e.path(), "tls-bad.toml", &tls(&other));
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(
        r.code, 111,
        "an untrusted database certificate is a temporary failure: {r:?}"
    );
}

#[test]
fn non_ascii_names_round_trip() {
    let e = Env::new();
    let cfg = e.config_with("", "[provisioning]\ndefault_template = \"Default\"\n");
    assert_eq!(
        e.login(&cfg, "hans.mueller@example.org", HMUELLER_PW).code,
        0
    );
    // No displayName: the cn, with its comma and umlaut, stored as UTF-8.
    assert_eq!(
        e.db.value("SELECT HEX(name) FROM mailbox WHERE username = 'hans.mueller@example.org'"),
        "Müller, Hans"
            .bytes()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    );
}

/// A template with `active: 2` ("disallow login") creates the mailbox and its
/// alias with 2, as mailcow's mailbox('add', 'mailbox') does; the login that
/// created it is then refused, and the mailbox still receives (lookup answered).
#[test]
fn template_active_2_creates_mailbox_and_alias_with_2() {
    let e = Env::new();
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{}' WHERE template = 'Default'",
        DEFAULT_TEMPLATE.replace("\"active\":1", "\"active\":2")
    ));
    let cfg = e.config();
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    // Refused after the bind: the user is told (messages.login_disabled),
    // through the reply program with Dovecot's nologin and reason.
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("result=reject"), "{r:?}");
    assert_eq!(e.reply.var("nologin").as_deref(), Some("Y"));
    assert_eq!(
        e.reply.var("reason").as_deref(),
        Some("Login is disabled for this mailbox. Please contact your administrator.")
    );
    assert_eq!(
        e.db.sql("SELECT username, active FROM mailbox").trim(),
        "jdoe@example.org\t2"
    );
    assert_eq!(
        e.db.sql("SELECT address, goto, active FROM alias").trim(),
        "jdoe@example.org\tjdoe@example.org\t2"
    );
    e.reply.reset();
    assert_eq!(lookup(&cfg, "jdoe@example.org", &e.reply).code, 2);
}

/// A leftover `quota2` / `quota2replica` row (of a mailbox removed by hand)
/// does not block the creation: its counters are reset, as mailcow's
/// mailbox('add', 'mailbox') does with ON DUPLICATE KEY UPDATE.
#[test]
fn leftover_quota_rows_are_reset_not_a_failure() {
    let e = Env::new();
    e.db.sql(
        "INSERT INTO quota2 (username, bytes, messages) VALUES ('jdoe@example.org', 12345, 7);\
         INSERT INTO quota2replica (username, bytes, messages) VALUES ('jdoe@example.org', 999, 3);",
    );
    let cfg = e.config();
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.count("mailbox"), 1);
    for table in ["quota2", "quota2replica"] {
        assert_eq!(
            e.db.sql(&format!("SELECT username, bytes, messages FROM {table}"))
                .trim(),
            "jdoe@example.org\t0\t0",
            "{table}"
        );
    }
}

/// Template quota 0 is unlimited on update too: a mailbox moved from the
/// 1 GiB Staff template to the Default one (quota 0) gets quota 0, as mailcow's
/// mailbox('edit', 'mailbox_from_template') writes `intval(0 / 1048576)`;
/// a quota that is not whole MiB is rounded down like mailcow's intval().
#[test]
fn template_quota_0_is_unlimited_on_create_and_update() {
    let e = Env::new();
    e.slapd.modify(
        "dn: uid=jdoe,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: otherMailbox\notherMailbox: staff-only\n",
    );
    let cfg = e.config();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    assert_eq!(e.db.value("SELECT quota FROM mailbox"), "1073741824");
    e.slapd.modify(
        "dn: uid=jdoe,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: otherMailbox\notherMailbox: default\n",
    );
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    assert_eq!(e.db.value("SELECT quota FROM mailbox"), "0");
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{}' WHERE template = 'Default'",
        DEFAULT_TEMPLATE.replace("\"quota\":0", "\"quota\":5242897")
    ));
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    assert_eq!(e.db.value("SELECT quota FROM mailbox"), "5242880");
}

/// `attributes` as mailcow writes them: every key of mailbox('add',
/// 'mailbox') (functions.mailbox.inc.php) plus `recovery_email` (null, as its
/// edit path leaves it), `eas_access` / `dav_access` / `force_tfa` from the
/// template and updated when it changes, `force_pw_update` always "0".
#[test]
fn attributes_carry_eas_dav_tfa_and_never_force_a_password_change() {
    let e = Env::new();
    let denying = DEFAULT_TEMPLATE.replace(
        "\"force_pw_update\":0,",
        "\"force_pw_update\":1,\"force_tfa\":1,\"eas_access\":0,\"dav_access\":0,",
    );
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{denying}' WHERE template = 'Default'"
    ));
    let cfg = e.config();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    let attrs = || -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&e.db.value("SELECT attributes FROM mailbox")).unwrap()
    };
    let a = attrs();
    let mut keys: Vec<&str> = a.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "attribute_hash",
            "dav_access",
            "eas_access",
            "force_pw_update",
            "force_tfa",
            "imap_access",
            "mailbox_format",
            "passwd_update",
            "pop3_access",
            "quarantine_category",
            "quarantine_notification",
            "recovery_email",
            "relayhost",
            "sieve_access",
            "smtp_access",
            "sogo_access",
            "tls_enforce_in",
            "tls_enforce_out"
        ]
    );
    let get = |a: &serde_json::Map<String, serde_json::Value>, k: &str| a[k].clone();
    assert_eq!(get(&a, "eas_access"), "0");
    assert_eq!(get(&a, "dav_access"), "0");
    assert_eq!(get(&a, "force_tfa"), "1");
    assert_eq!(get(&a, "force_pw_update"), "0");
    assert_eq!(get(&a, "recovery_email"), serde_json::Value::Null);
    // ActiveSync is refused by the flag (mailcow treats a missing key as allowed).
    assert_eq!(
        e.login_as(&cfg, "jdoe@example.org", "secret1", "eas").code,
        1
    );
    // The template allows EAS and DAV again, drops force_tfa: updated.
    let allowing = denying.replace(
        "\"force_tfa\":1,\"eas_access\":0,\"dav_access\":0,",
        "\"force_tfa\":0,\"eas_access\":1,\"dav_access\":1,",
    );
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{allowing}' WHERE template = 'Default'"
    ));
    // The next login (checked against the flags as they were) applies it.
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    assert_eq!(
        e.login_as(&cfg, "jdoe@example.org", "secret1", "eas").code,
        0
    );
    let a = attrs();
    assert_eq!(
        (
            get(&a, "eas_access"),
            get(&a, "dav_access"),
            get(&a, "force_tfa")
        ),
        ("1".into(), "1".into(), "0".into())
    );
    assert_eq!(get(&a, "force_pw_update"), "0");
    assert_eq!(get(&a, "attribute_hash"), php_hash(&allowing));
}

/// A template with `acl_pw_reset: 1` grants it; dropping the key takes it
/// back on update (mailcow's acl('edit', 'user') sets unlisted columns to 0).
#[test]
fn pw_reset_only_when_the_template_grants_it() {
    let e = Env::new();
    let granting = DEFAULT_TEMPLATE.replace(
        "\"acl_app_passwds\":1",
        "\"acl_app_passwds\":1,\"acl_pw_reset\":1",
    );
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{granting}' WHERE template = 'Default'"
    ));
    let cfg = e.config();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    assert_eq!(e.db.value("SELECT pw_reset FROM user_acl"), "1");
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{DEFAULT_TEMPLATE}' WHERE template = 'Default'"
    ));
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    assert_eq!(e.db.value("SELECT pw_reset FROM user_acl"), "0");
}

/// On update the template's tags are added and none deleted, as mailcow's
/// mailbox('edit', 'mailbox'): an admin's own tag stays, and so does a tag
/// the template no longer has.
#[test]
fn template_update_adds_tags_and_keeps_an_admins_tag() {
    let e = Env::new();
    let tagged = |tags: &str| DEFAULT_TEMPLATE.replace("\"tags\":[]", &format!("\"tags\":{tags}"));
    let first = tagged("[\"t1\"]");
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{first}' WHERE template = 'Default'"
    ));
    let cfg = e.config();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    e.db.sql(
        "INSERT INTO tags_mailbox (tag_name, username) VALUES ('by-admin', 'jdoe@example.org')",
    );
    let second = tagged("[\"t2\",\"t1\"]");
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{second}' WHERE template = 'Default'"
    ));
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    let tags = || {
        e.db.value("SELECT GROUP_CONCAT(tag_name ORDER BY tag_name) FROM tags_mailbox")
    };
    assert_eq!(tags(), "by-admin,t1,t2");
    let third = tagged("[]");
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{third}' WHERE template = 'Default'"
    ));
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    assert_eq!(
        e.db.value("SELECT JSON_VALUE(attributes, '$.attribute_hash') FROM mailbox"),
        php_hash(&third),
        "the update ran"
    );
    assert_eq!(tags(), "by-admin,t1,t2", "nothing deleted");
}

/// SOGo's row (`_sogo_static_view`) as mailcow's update_sogo_static_view()
/// writes it: on creation, refreshed when the name changes (with the
/// mailbox's aliases, alias-domain addresses and external sender ACLs), and
/// gone while the mailbox is not active 1.
#[test]
fn sogo_rows_created_renamed_and_removed() {
    let e = Env::new();
    let cfg = e.config();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    let row = || {
        e.db.sql(
            "SELECT c_uid, domain, c_name, c_cn, mail, aliases, ad_aliases, ext_acl, kind, multiple_bookings, \
             c_l IS NULL AND c_o IS NULL AND c_ou IS NULL AND c_telephonenumber IS NULL FROM _sogo_static_view",
        )
        .trim()
        .to_owned()
    };
    assert_eq!(
        row(),
        "jdoe@example.org\texample.org\tjdoe@example.org\tJohn Doe\tjdoe@example.org\t\t\t\t\t-1\t1"
    );
    let password = e.db.value("SELECT c_password FROM _sogo_static_view");
    assert!(password.starts_with("{SSHA256}"), "{password}");
    assert_ne!(
        password, "{SSHA256}47DEQpj8HBSa+/TImW5JCeuQeRkm5NMpJWZG3hSuFU0=",
        "never the hash of the empty password"
    );
    // Aliases (an inactive one and one hidden from SOGo do not count), an
    // alias domain and an external sender ACL; then the name changes.
    e.db.sql(
        "INSERT INTO alias (address, goto, domain, active) VALUES ('john@example.org', 'jdoe@example.org', 'example.org', 1), \
           ('doe@example.org', 'other@example.org,jdoe@example.org', 'example.org', 1), \
           ('off@example.org', 'jdoe@example.org', 'example.org', 0);\
         INSERT INTO alias (address, goto, domain, active, sogo_visible) VALUES ('hidden@example.org', 'jdoe@example.org', 'example.org', 1, 0);\
         INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('example.net', 'example.org');\
         INSERT INTO sender_acl (logged_in_as, send_as, external) VALUES ('jdoe@example.org', 'jd@elsewhere.example', 1), \
           ('jdoe@example.org', 'internal@example.org', 0);",
    );
    e.slapd.modify(
        "dn: uid=jdoe,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: displayName\ndisplayName: John Q. Doe\n",
    );
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    assert_eq!(e.db.value("SELECT name FROM mailbox"), "John Q. Doe");
    assert_eq!(
        row(),
        "jdoe@example.org\texample.org\tjdoe@example.org\tJohn Q. Doe\tjdoe@example.org\t\
         doe@example.org john@example.org\tjdoe@example.net\tjd@elsewhere.example\t\t-1\t1"
    );
    assert_eq!(e.count("_sogo_static_view"), 1);
}

/// The UI's "Auto-create users on login" off (`identity_provider` row
/// `login_provisioning` = 0) stops creation at login, as mailcow's
/// ldap_mbox_login() does; a sync import still creates (mailcow's
/// crons/ldap-sync.php does not look at it).
#[test]
fn login_provisioning_off_in_the_ui_stops_login_creation_not_import() {
    let e = Env::new();
    e.db.sql(&format!(
        "INSERT INTO identity_provider (`key`, `value`) VALUES ('authsource', 'ldap'), ('host', '127.0.0.1'), \
         ('port', '{}'), ('basedn', '{BASE}'), ('username_field', 'mail'), ('filter', ''), \
         ('attribute_field', 'othermailbox'), ('binddn', '{READER_DN}'), ('bindpass', '{READER_PW}'), \
         ('use_ssl', ''), ('use_tls', ''), ('ignore_ssl_error', ''), ('mappers', '[\"default\"]'), \
         ('templates', '[\"Default\"]'), ('import_users', '0'), ('periodic_sync', '0'), ('sync_interval', '15'), \
         ('login_provisioning', '0')",
        e.slapd.port
    ));
    let text = format!(
        "state_dir = \"{}\"\n{}\n[mailcow]\nsettings_from_database = true\n\n[sync]\nimport_users = true\n",
        e.path().display(),
        e.db.section()
    );
    let cfg = write_config(e.path(), "ui.toml", &text);
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 1, "{r:?}");
    // No mailbox and no creation: mailcow's passdb (passdb = "full") says
    // "unknown user" before any bind.
    assert!(r.stderr.contains("reason=\"unknown user\""), "{}", r.stderr);
    assert_eq!(e.count("mailbox"), 0);
    let r = admin(&cfg, &["sync", "--force"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        e.db.value("SELECT COUNT(*) FROM mailbox WHERE username = 'jdoe@example.org'"),
        "1"
    );
    // Switched on again in the UI: an existing mailbox logs in, and so would a new one.
    e.db.sql("UPDATE identity_provider SET `value` = '1' WHERE `key` = 'login_provisioning'");
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
}

/// Without a Redis (`mailcow.redis_url`), a template's rate limit cannot be
/// applied: the login goes on and says so.
#[test]
fn rate_limit_without_redis_is_said_not_a_failure() {
    let e = Env::new();
    let limited = DEFAULT_TEMPLATE.replace("\"rl_value\":\"\"", "\"rl_value\":\"10\"");
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{limited}' WHERE template = 'Default'"
    ));
    let cfg = e.config();
    let r = e.login(&cfg, "jdoe@example.org", "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(
            "template rate limits (rl_value / rl_frame) are not applied: no mailcow.redis_url"
        ),
        "{}",
        r.stderr
    );
}

/// A column of a type mailcow's schema does not give it (a changed schema, a
/// row written by hand) is a temporary failure naming the table and column:
/// a login and a userdb lookup answer 111, never a panic. (The mysql crate's
/// typed reads, used before, panicked here: the panic hook made it 111 too,
/// but as "internal error at .../mysql_common/.../row/mod.rs" with no word
/// of the column, and `sync` and `serve` have no such hook.)
#[test]
fn a_column_of_an_unexpected_type_is_a_temporary_failure_naming_it() {
    let e = Env::new();
    let cfg = e.config();
    assert_eq!(e.login(&cfg, "jdoe@example.org", "secret1").code, 0);
    e.db.sql(
        "ALTER TABLE mailbox MODIFY quota VARCHAR(20) NOT NULL; UPDATE mailbox SET quota = 'lots'",
    );
    for r in [
        e.login(&cfg, "jdoe@example.org", "secret1"),
        lookup(&cfg, "jdoe@example.org", &e.reply),
    ] {
        assert_eq!(r.code, 111, "{r:?}");
        assert!(
            !r.stderr.contains("internal error") && !r.stderr.contains("panicked"),
            "{r:?}"
        );
        assert!(
            r.stderr
                .contains("mailbox.quota holds text where an integer was expected"),
            "{r:?}"
        );
    }
}
