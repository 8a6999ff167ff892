//! End to end: a real Dovecot 2.3 (and Postfix) with the binary as its
//! checkpassword passdb/userdb, against a private slapd, spoken to over TCP
//! with the mail protocols themselves.
//!
//! Most tests run the helper in its auth-only mode (no `[database]`); the
//! `db_*` tests run it with a database on the shared private MariaDB (the
//! mailcow schema subset, a domain and two templates, see
//! [`Stack::with_database`]) and check the rows after the logins.

use crate::provision::{DEFAULT_TEMPLATE, STAFF_TEMPLATE};
use crate::support::clients::{
    base64, contrib, doveadm_text, imap_login, line_with, moved, text, Imap, Pop3, Sieve, Smtp,
};
use crate::support::dovecot::{default_auth, Dovecot, MAIL_GID, MAIL_UID};
use crate::support::mariadb::Db;
use crate::support::postfix::Postfix;
use crate::support::Slapd;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

const USER: &str = "jdoe@example.org";
const PASSWORD: &str = "secret1";
const UNKNOWN: &str = "nobody-here@example.org";
/// How long to wait for a log line Dovecot writes after answering the client.
const LOG_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The servers of one test.

/// slapd + Dovecot (+ Postfix, + a database) in one temporary folder. Fields
/// drop in order: Postfix, then Dovecot, then slapd, then the database (the
/// shared MariaDB stops by pid when its last user drops it), then the folder.
struct Stack {
    postfix: Option<Postfix>,
    dovecot: Dovecot,
    slapd: Slapd,
    db: Option<Db>,
    /// Every password a test typed, right or wrong: none may reach a log.
    typed: Vec<String>,
    dir: TempDir,
}

impl Stack {
    /// Auth-only mode: the helper's config is the slapd's `[ldap]` section.
    fn new() -> Stack {
        Self::with_helper_config(|slapd| slapd.ldap_section())
    }

    /// `body(slapd)` is the helper's config without `state_dir`, `log_target`
    /// and `[dovecot]` (the Dovecot fixture adds those).
    fn with_helper_config(body: impl FnOnce(&Slapd) -> String) -> Stack {
        Self::build(body, |_, args| default_auth(args))
    }

    /// The most general form: `auth(root, helper_args)` makes the
    /// passdb/userdb part of Dovecot's config (and may prepare files under
    /// the test's folder `root` for it).
    fn build(
        body: impl FnOnce(&Slapd) -> String,
        auth: impl FnOnce(&Path, &str) -> String,
    ) -> Stack {
        let dir = TempDir::new().unwrap();
        let slapd = Slapd::start(dir.path());
        let root = dir.path().to_owned();
        let dovecot = Dovecot::start_with(dir.path(), &body(&slapd), |args| auth(&root, args));
        Stack {
            postfix: None,
            dovecot,
            slapd,
            db: None,
            typed: Vec::new(),
            dir,
        }
    }

    /// Database mode: a database with the mailcow schema subset, domain
    /// example.org (10 mailboxes, default quota 3072 MiB) and the templates
    /// Default and Staff of the provisioning tests; the helper maps
    /// otherMailbox "staff" -> Staff (1 GiB, POP3 off), then "default" ->
    /// Default. jdoe has both values: the first mapping that matches wins, Staff.
    /// Every INSERT, UPDATE and DELETE on the tables the helper writes is
    /// counted by triggers in table `writes` (see [`Stack::writes`]).
    fn with_database() -> Stack {
        let db = Db::new();
        db.sql(&format!(
            "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active) \
             VALUES ('example.org', 10, 3072, 10240, 102400, 1);\
             INSERT INTO templates (template, type, attributes) VALUES \
             ('Default', 'mailbox', '{DEFAULT_TEMPLATE}'), ('Staff', 'mailbox', '{STAFF_TEMPLATE}');"
        ));
        // A row-level trigger fires for every row a statement touches, even when
        // the values written are the ones already there: an UPDATE that
        // rewrites a row with the same values shows here, not in a snapshot.
        db.sql("CREATE TABLE writes (n INT NOT NULL); INSERT INTO writes VALUES (0);");
        let mut triggers = String::new();
        for table in [
            "mailbox",
            "alias",
            "user_acl",
            "tags_mailbox",
            "quota2",
            "quota2replica",
            "domain",
            "templates",
        ] {
            for op in ["INSERT", "UPDATE", "DELETE"] {
                triggers.push_str(&format!(
                    "CREATE TRIGGER count_{table}_{op} AFTER {op} ON {table} \
                     FOR EACH ROW UPDATE writes SET n = n + 1;"
                ));
            }
        }
        db.sql(&triggers);
        let section = db.section();
        let mut s = Self::with_helper_config(|slapd| {
            format!(
                "{}attribute_field = \"otherMailbox\"\n\n{section}\n\
                 [[attribute_mapping]]\nattribute = \"staff\"\ntemplate = \"Staff\"\n\n\
                 [[attribute_mapping]]\nattribute = \"default\"\ntemplate = \"Default\"\n",
                slapd.ldap_section()
            )
        });
        s.db = Some(db);
        s
    }

    fn db(&self) -> &Db {
        self.db.as_ref().expect("Stack::with_database")
    }

    /// Rows written so far by anyone (the helper, or the test as root).
    fn writes(&self) -> u64 {
        self.db().value("SELECT n FROM writes").parse().unwrap()
    }

    /// A fingerprint of every row the helper may write (as in provision.rs).
    fn snapshot(&self) -> String {
        self.db().sql(
            "SELECT username, password, name, quota, attributes, active, authsource, created, modified \
             FROM mailbox ORDER BY username;\
             SELECT address, goto, domain, active, created, modified FROM alias ORDER BY address;\
             SELECT * FROM user_acl ORDER BY username;\
             SELECT * FROM tags_mailbox ORDER BY username, tag_name;\
             SELECT * FROM quota2 ORDER BY username; SELECT * FROM quota2replica ORDER BY username;",
        )
    }

    fn mailboxes(&self) -> usize {
        self.db()
            .value("SELECT COUNT(*) FROM mailbox")
            .parse()
            .unwrap()
    }

    /// Set one of the mailbox's `attributes` flags, as an admin does in mailcow's UI.
    fn set_flag(&self, user: &str, flag: &str, value: &str) {
        self.db().sql(&format!(
            "UPDATE mailbox SET attributes = JSON_SET(attributes, '$.{flag}', '{value}') \
             WHERE username = '{user}'"
        ));
    }

    fn with_postfix(mut self) -> Stack {
        self.postfix = Some(Postfix::start(self.dir.path(), self.dovecot.auth_port));
        self
    }

    fn postfix(&self) -> &Postfix {
        self.postfix.as_ref().expect("Stack::with_postfix")
    }

    /// Dovecot's log from byte `from` on, once it contains `needle` (within [`LOG_WAIT`]).
    fn log_with(&self, from: usize, needle: &str) -> String {
        self.dovecot.wait_for_log(from, needle, LOG_WAIT)
    }

    /// Remember a password so that [`Stack::assert_logs_clean`] looks for it.
    fn pw(&mut self, p: &str) -> String {
        self.typed.push(p.to_owned());
        p.to_owned()
    }

    /// The helper's lines reached Dovecot's log, and no password is in any log.
    fn assert_logs_clean(&self) {
        let log = self.dovecot.log();
        assert!(
            log.contains("mailcow-ldap-auth: "),
            "no line of the helper in Dovecot's log:\n{log}"
        );
        let mut logs = vec![("dovecot", log)];
        if let Some(p) = &self.postfix {
            logs.push(("postfix", p.log()));
        }
        for (name, text) in &logs {
            for pw in &self.typed {
                assert!(
                    !text.contains(pw.as_str()),
                    "password {pw:?} appears in the {name} log:\n{text}"
                );
                let b64 = base64(pw.as_bytes());
                assert!(
                    !text.contains(&b64),
                    "base64 of password {pw:?} appears in the {name} log"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Sessions the tests repeat.

/// Connect, LOGIN (must be OK), SELECT INBOX (must be OK: the mail process
/// got its uid/gid/home from the userdb), LOGOUT. The `*_what` strings
/// start the assertion messages.
fn imap_login_and_select(
    port: u16,
    user: &str,
    password: &str,
    login_what: &str,
    select_what: &str,
) {
    let mut c = Imap::connect(port);
    let r = c.login(user, password);
    assert!(r.starts_with("OK"), "{login_what}: {r}");
    let r = c.cmd("SELECT INBOX");
    assert!(r.starts_with("OK"), "{select_what}: {r}");
    let _ = c.cmd("LOGOUT");
}

/// Connect to Postfix and say EHLO, checking that AUTH PLAIN is offered.
fn smtp_connect(port: u16) -> Smtp {
    let mut smtp = Smtp::connect(port);
    let reply = smtp.ehlo();
    assert!(
        reply
            .iter()
            .any(|l| l[4..].starts_with("AUTH") && l.contains("PLAIN")),
        "Postfix does not offer AUTH PLAIN: {reply:?}"
    );
    smtp
}

/// One SMTP session: EHLO, `AUTH PLAIN`, QUIT; the reply to AUTH.
fn smtp_auth_plain(port: u16, user: &str, password: &str) -> Vec<String> {
    let mut smtp = smtp_connect(port);
    let r = smtp.auth_plain(user, password);
    let _ = smtp.cmd("QUIT");
    r
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn imap_login_accepts_right_password_and_rejects_wrong_and_unknown() {
    let mut s = Stack::new();
    let port = s.dovecot.imap_port;
    let right = s.pw(PASSWORD);
    let wrong = s.pw("Wr0ng-e2e-imap-4711");

    let from = s.dovecot.log_len();
    // The mail process runs with the helper's uid/gid/home: the mailbox works.
    imap_login_and_select(
        port,
        USER,
        &right,
        "LOGIN with the right password",
        "SELECT INBOX after login",
    );
    let maildir = s.dovecot.home_of(USER).join("Maildir");
    let meta = std::fs::metadata(&maildir)
        .unwrap_or_else(|e| panic!("{} not created: {e}", maildir.display()));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid()),
        (MAIL_UID, MAIL_GID),
        "Maildir owned by the helper's uid/gid"
    );
    let log = s.log_with(from, "result=accept");
    assert!(
        line_with(
            &log,
            &[
                "login user=\"jdoe@example.org\"",
                "service=imap",
                "rip=127.0.0.1",
                "result=accept",
            ],
        )
        .is_some(),
        "the helper's login line in Dovecot's log:\n{log}"
    );
    // The userdb lookup after the password check went through the helper too.
    s.log_with(from, "lookup user=\"jdoe@example.org\" service=imap");

    let from = s.dovecot.log_len();
    let r = imap_login(port, USER, &wrong);
    assert!(
        r.starts_with("NO") && r.contains("[AUTHENTICATIONFAILED]"),
        "LOGIN with a wrong password: {r}"
    );
    let log = s.log_with(from, "result=reject");
    assert!(!log.contains("result=tempfail"), "{log}");

    let from = s.dovecot.log_len();
    let r = imap_login(port, UNKNOWN, &right);
    assert!(
        r.starts_with("NO") && r.contains("[AUTHENTICATIONFAILED]"),
        "LOGIN as an unknown user: {r}"
    );
    s.log_with(from, &format!("login user=\"{UNKNOWN}\" service=imap"));

    // Dovecot lower-cases logins before the helper sees them; the helper
    // canonicalises the rest: a mixed-case login works.
    let r = imap_login(port, "JDoe@Example.ORG", &right);
    assert!(r.starts_with("OK"), "LOGIN with a mixed-case login: {r}");

    s.assert_logs_clean();
}

#[test]
fn pop3_user_pass() {
    let mut s = Stack::new();
    let port = s.dovecot.pop3_port;
    let right = s.pw(PASSWORD);
    let wrong = s.pw("Wr0ng-e2e-pop3-4712");

    let mut pop = Pop3::connect(port);
    let r = pop.cmd(&format!("USER {USER}"));
    assert!(r.starts_with("+OK"), "USER: {r}");
    let from = s.dovecot.log_len();
    let r = pop.cmd(&format!("PASS {right}"));
    assert!(r.starts_with("+OK"), "PASS with the right password: {r}");
    let r = pop.cmd("STAT");
    assert!(r.starts_with("+OK 0 0"), "STAT of the new mailbox: {r}");
    let r = pop.cmd("QUIT");
    assert!(r.starts_with("+OK"), "QUIT: {r}");
    s.log_with(from, "login user=\"jdoe@example.org\" service=pop3");

    let mut pop = Pop3::connect(port);
    let r = pop.login(USER, &wrong);
    assert!(
        r.starts_with("-ERR [AUTH]"),
        "PASS with a wrong password: {r}"
    );
    let _ = pop.cmd("QUIT");

    s.assert_logs_clean();
}

#[test]
fn managesieve_authenticate_plain() {
    let mut s = Stack::new();
    let port = s.dovecot.sieve_port;
    let right = s.pw(PASSWORD);
    let wrong = s.pw("Wr0ng-e2e-sieve-4713");

    let from = s.dovecot.log_len();
    let mut sv = Sieve::connect(port);
    let r = sv.authenticate_plain(USER, &right);
    assert!(
        r.starts_with("OK"),
        "AUTHENTICATE PLAIN, right password: {r}"
    );
    let r = sv.cmd("LISTSCRIPTS");
    assert!(r.starts_with("OK"), "LISTSCRIPTS: {r}");
    let _ = sv.cmd("LOGOUT");
    s.log_with(from, "login user=\"jdoe@example.org\" service=sieve");

    let mut sv = Sieve::connect(port);
    let r = sv.authenticate_plain(USER, &wrong);
    assert!(
        r.starts_with("NO"),
        "AUTHENTICATE PLAIN, wrong password: {r}"
    );
    let _ = sv.cmd("LOGOUT");

    s.assert_logs_clean();
}

#[test]
fn smtp_auth_through_postfix_and_dovecot_sasl() {
    let mut s = Stack::new().with_postfix();
    let port = s.postfix().smtp_port;
    let right = s.pw(PASSWORD);
    let wrong = s.pw("Wr0ng-e2e-smtp-4714");

    let from = s.dovecot.log_len();
    let mut smtp = smtp_connect(port);
    let r = smtp.auth_plain(USER, &right);
    assert!(
        r[0].starts_with("235 "),
        "AUTH PLAIN, right password: {r:?}"
    );
    let r = smtp.cmd("QUIT");
    assert!(r[0].starts_with("221"), "QUIT: {r:?}");
    // Postfix asked Dovecot with service=smtp, and Dovecot passed it on.
    let log = s.log_with(from, "login user=\"jdoe@example.org\" service=smtp");
    assert!(
        line_with(&log, &["service=smtp", "result=accept"]).is_some(),
        "{log}"
    );

    let from = s.dovecot.log_len();
    let mut smtp = smtp_connect(port);
    let r = smtp.auth_plain(USER, &wrong);
    assert!(
        r[0].starts_with("535 "),
        "AUTH PLAIN, wrong password: {r:?}"
    );
    // AUTH LOGIN, the other mechanism Dovecot offers, for the unknown user.
    let r = smtp.auth_login(UNKNOWN, &right);
    assert!(r[0].starts_with("535 "), "AUTH LOGIN, unknown user: {r:?}");
    let _ = smtp.cmd("QUIT");
    let log = s.log_with(from, &format!("login user=\"{UNKNOWN}\" service=smtp"));
    assert!(
        line_with(&log, &["service=smtp", "result=reject"]).is_some(),
        "{log}"
    );

    s.assert_logs_clean();
}

#[test]
fn doveadm_user_and_auth_test() {
    let mut s = Stack::new();
    let right = s.pw(PASSWORD);
    let wrong = s.pw("Wr0ng-e2e-doveadm-4715");

    // userdb lookup (AUTHORIZED=1): the fields the helper returns.
    let out = s.dovecot.doveadm(&["user", USER]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "doveadm user {USER}: {}\n{stdout}{}",
        out.status,
        text(&out.stderr)
    );
    let field = |name: &str| {
        stdout
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    assert_eq!(field("uid"), Some(MAIL_UID.to_string()), "{stdout}");
    assert_eq!(field("gid"), Some(MAIL_GID.to_string()), "{stdout}");
    assert_eq!(
        field("home"),
        Some(s.dovecot.home_of(USER).display().to_string()),
        "{stdout}"
    );

    // Unknown user: exit 3 from the helper, "doesn't exist" (EX_NOUSER) from doveadm.
    let (status, all) = doveadm_text(&s.dovecot, &["user", UNKNOWN]);
    assert_eq!(status.code(), Some(67), "doveadm user {UNKNOWN}: {all}");
    assert!(all.contains("doesn't exist"), "{all}");

    // passdb through the auth-client socket (service=doveadm).
    let (status, all) = doveadm_text(&s.dovecot, &["auth", "test", USER, &right]);
    assert!(status.success(), "doveadm auth test, right password: {all}");
    assert!(all.contains("auth succeeded"), "{all}");
    let (status, all) = doveadm_text(&s.dovecot, &["auth", "test", USER, &wrong]);
    assert!(
        !status.success(),
        "doveadm auth test, wrong password: {all}"
    );
    assert!(all.contains("auth failed"), "{all}");

    s.assert_logs_clean();
}

#[test]
fn ldap_outage_is_a_temporary_failure_and_recovery_needs_no_restart() {
    let mut s = Stack::new();
    let right = s.pw(PASSWORD);
    let imap = s.dovecot.imap_port;
    let pid = s.dovecot.pid();

    let r = imap_login(imap, USER, &right);
    assert!(r.starts_with("OK"), "LOGIN before the outage: {r}");

    s.slapd.stop();
    let from = s.dovecot.log_len();
    let r = imap_login(imap, USER, &right);
    assert!(
        r.starts_with("NO") && r.contains("[UNAVAILABLE]") && !r.contains("AUTHENTICATIONFAILED"),
        "LOGIN while LDAP is down must be a temporary failure: {r}"
    );
    let log = s.log_with(from, "result=tempfail");
    assert!(
        line_with(
            &log,
            &[
                "mailcow-ldap-auth: ",
                "user=\"jdoe@example.org\"",
                "service=imap",
                "result=tempfail",
            ],
        )
        .is_some(),
        "the helper's tempfail line in Dovecot's log:\n{log}"
    );
    assert!(!log.contains("result=reject"), "{log}");

    // POP3 says so too.
    let mut pop = Pop3::connect(s.dovecot.pop3_port);
    pop.cmd(&format!("USER {USER}"));
    let r = pop.cmd(&format!("PASS {right}"));
    assert!(
        r.starts_with("-ERR [SYS/TEMP]"),
        "POP3 PASS while LDAP is down: {r}"
    );
    let _ = pop.cmd("QUIT");

    // A userdb lookup is not "user unknown" either (LMTP would bounce mail).
    let (status, all) = doveadm_text(&s.dovecot, &["user", USER]);
    assert!(
        !status.success() && status.code() != Some(67) && !all.contains("doesn't exist"),
        "doveadm user while LDAP is down: {status} {all}"
    );

    // Back up: logins work again without restarting Dovecot.
    s.slapd.run();
    let r = imap_login(imap, USER, &right);
    assert!(r.starts_with("OK"), "LOGIN after LDAP came back: {r}");
    assert_eq!(s.dovecot.pid(), pid, "Dovecot was not restarted");
    let out = s.dovecot.doveadm(&["user", USER]);
    assert!(
        out.status.success(),
        "doveadm user after LDAP came back: {}",
        text(&out.stdout)
    );

    s.assert_logs_clean();
}

// ---------------------------------------------------------------------------
// The configs in contrib/, as an admin copies them (only paths replaced).

/// A file of contrib/, with `/usr/bin/mailcow-ldap-auth checkpassword`
/// replaced by the helper's test arguments.
fn contrib_with_helper(path: &str, helper_args: &str) -> String {
    moved(
        &contrib(path),
        "/usr/bin/mailcow-ldap-auth checkpassword",
        helper_args,
    )
}

#[test]
fn contrib_dovecot_config_works_as_shipped() {
    let mut s = Stack::build(
        |slapd| slapd.ldap_section(),
        |_, args| contrib_with_helper("dovecot-2.3/10-auth-mailcow-ldap.conf", args),
    );
    let right = s.pw(PASSWORD);
    let wrong = s.pw("Wr0ng-e2e-contrib-4716");
    let imap = s.dovecot.imap_port;

    let from = s.dovecot.log_len();
    imap_login_and_select(
        imap,
        USER,
        &right,
        "LOGIN with the shipped config",
        "SELECT INBOX",
    );
    // prefetch served the userdb step from the passdb reply: one helper run.
    let log = s.log_with(from, "Logged out");
    assert!(
        log.contains("login user=\"jdoe@example.org\" service=imap"),
        "{log}"
    );
    assert!(
        !log.contains("lookup user=\"jdoe@example.org\" service=imap"),
        "prefetch should make the userdb lookup unnecessary:\n{log}"
    );

    let r = imap_login(imap, USER, &wrong);
    assert!(
        r.starts_with("NO") && r.contains("[AUTHENTICATIONFAILED]"),
        "LOGIN with a wrong password: {r}"
    );

    // Without a passdb step (doveadm, LMTP) the second userdb, the helper, answers.
    let from = s.dovecot.log_len();
    let out = s.dovecot.doveadm(&["user", "-f", "home", USER]);
    assert!(
        out.status.success(),
        "doveadm user with the shipped config: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout).trim(),
        s.dovecot.home_of(USER).display().to_string()
    );
    s.log_with(from, "lookup user=\"jdoe@example.org\" service=doveadm");
    let out = s.dovecot.doveadm(&["user", UNKNOWN]);
    assert_eq!(out.status.code(), Some(67), "{}", text(&out.stdout));

    s.assert_logs_clean();
}

#[test]
fn contrib_chained_config_falls_through_to_the_next_passdb() {
    // mailcow's SQL passdb/userdb stand-in: a passwd-file with one local
    // account (the chain's result_* rules are what is tested here).
    const LOCAL: &str = "local@example.org";
    const LOCAL_PW: &str = "Local-pw-4717";
    let mut s = Stack::build(
        |slapd| slapd.ldap_section(),
        |root, args| {
            let passwd = root.join("dovecot").join("passwd");
            std::fs::write(
                &passwd,
                format!(
                    "{LOCAL}:{{PLAIN}}{LOCAL_PW}:{MAIL_UID}:{MAIL_GID}::{}/example.org/local::\n",
                    root.join("dovecot/mail").display()
                ),
            )
            .unwrap();
            let conf = contrib_with_helper("dovecot-2.3/10-auth-mailcow-ldap-chained.conf", args);
            let conf = moved(&conf, "driver = sql", "driver = passwd-file");
            moved(
                &conf,
                "args = /etc/dovecot/dovecot-sql-mailcow.conf.ext",
                &format!("args = {}", passwd.display()),
            )
        },
    );
    let right = s.pw(PASSWORD);
    let local_pw = s.pw(LOCAL_PW);
    let wrong = s.pw("Wr0ng-e2e-chain-4718");
    let imap = s.dovecot.imap_port;

    // LDAP account: the helper says yes, the next passdb is not asked.
    let r = imap_login(imap, USER, &right);
    assert!(r.starts_with("OK"), "LDAP account through the chain: {r}");
    // Local account: the helper says no (exit 1), the next passdb says yes.
    let from = s.dovecot.log_len();
    imap_login_and_select(
        imap,
        LOCAL,
        &local_pw,
        "local account after the helper",
        "SELECT INBOX (userdb from the 2nd userdb)",
    );
    s.log_with(
        from,
        &format!("login user=\"{LOCAL}\" service=imap rip=127.0.0.1 result=reject"),
    );
    // Wrong password for the LDAP account: both say no.
    let r = imap_login(imap, USER, &wrong);
    assert!(
        r.starts_with("NO") && r.contains("[AUTHENTICATIONFAILED]"),
        "wrong password through the chain: {r}"
    );

    // LDAP down: the local account still works; the LDAP account gets a
    // temporary failure, not "wrong password", although the last passdb failed.
    s.slapd.stop();
    let r = imap_login(imap, LOCAL, &local_pw);
    assert!(r.starts_with("OK"), "local account while LDAP is down: {r}");
    let from = s.dovecot.log_len();
    let r = imap_login(imap, USER, &right);
    assert!(
        r.starts_with("NO") && r.contains("[UNAVAILABLE]"),
        "LDAP account while LDAP is down, through the chain: {r}"
    );
    s.log_with(from, "result=tempfail");
    s.slapd.run();
    let r = imap_login(imap, USER, &right);
    assert!(
        r.starts_with("OK"),
        "LDAP account after LDAP came back: {r}"
    );

    s.assert_logs_clean();
}

#[test]
fn smtp_auth_through_the_contrib_unix_socket() {
    // Dovecot's listener from contrib/postfix, in this Postfix's queue directory.
    let mut s = Stack::build(
        |slapd| slapd.ldap_section(),
        |root, args| {
            let queue = Postfix::queue_dir_for(root);
            let private = queue.join("private");
            std::fs::create_dir_all(&private).unwrap();
            let out =
                crate::support::run_ok(std::process::Command::new("id").args(["-u", "postfix"]));
            let uid: u32 = text(&out.stdout).trim().parse().unwrap();
            std::os::unix::fs::chown(&private, Some(uid), None).unwrap();
            let listener = moved(
                &contrib("postfix/dovecot-auth-for-postfix.conf"),
                "/var/spool/postfix/private/auth",
                &private.join("auth").display().to_string(),
            );
            format!("{}\n{listener}", default_auth(args))
        },
    );
    // main.cf lines from contrib/postfix as shipped; only TLS is off here.
    let snippet = contrib("postfix/main.cf.snippet");
    assert!(
        snippet.contains("smtpd_sasl_path = private/auth"),
        "{snippet}"
    );
    let extra = format!("{snippet}\n# test only: no TLS in the tests\nsmtpd_tls_auth_only = no\n");
    s.postfix = Some(Postfix::start_with(
        s.dir.path(),
        s.dovecot.auth_port,
        &extra,
    ));
    // Postfix really uses the socket (the snippet's line won over the fixture's inet: one).
    let pf = s.postfix();
    let out = crate::support::run_ok(
        std::process::Command::new("postconf")
            .arg("-c")
            .arg(&pf.conf_dir)
            .args(["-h", "smtpd_sasl_path"]),
    );
    assert_eq!(text(&out.stdout).trim(), "private/auth");
    use std::os::unix::fs::FileTypeExt;
    let socket = pf.queue_dir.join("private/auth");
    assert!(
        std::fs::metadata(&socket).is_ok_and(|m| m.file_type().is_socket()),
        "{} is not Dovecot's socket",
        socket.display()
    );
    let right = s.pw(PASSWORD);
    let wrong = s.pw("Wr0ng-e2e-socket-4719");
    let port = s.postfix().smtp_port;

    let from = s.dovecot.log_len();
    let r = smtp_auth_plain(port, USER, &right);
    assert!(
        r[0].starts_with("235 "),
        "AUTH PLAIN over the unix socket: {r:?}"
    );
    s.log_with(
        from,
        "login user=\"jdoe@example.org\" service=smtp rip=127.0.0.1 result=accept",
    );
    let r = smtp_auth_plain(port, USER, &wrong);
    assert!(
        r[0].starts_with("535 "),
        "AUTH PLAIN, wrong password: {r:?}"
    );

    s.assert_logs_clean();
}

// ---------------------------------------------------------------------------
// With mailcow's database: provisioning on login, per-service flags, and
// userdb lookups answered from the mailbox table.

/// The Staff template's quota (bytes), which jdoe's mapping selects.
const STAFF_QUOTA: u64 = 1_073_741_824;

fn php_hash(template_text: &str) -> String {
    mailcow_ldap_auth::provision::template_hash(template_text)
}

/// The mailbox's `attributes`, parsed.
fn attributes(db: &Db, user: &str) -> serde_json::Value {
    let text = db.value(&format!(
        "SELECT attributes FROM mailbox WHERE username = '{user}'"
    ));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("attributes of {user}: {e}: {text:?}"))
}

/// Whether `log` has a line of the helper for `what` (`login`/`lookup`) of
/// `user` over `service` that also contains every one of `more`.
fn helper_logged(log: &str, what: &str, user: &str, service: &str, more: &[&str]) -> bool {
    let needle = format!("{what} user=\"{user}\" service={service} ");
    line_with(
        log,
        &[&["mailcow-ldap-auth: ", needle.as_str()], more].concat(),
    )
    .is_some()
}

#[test]
fn db_first_imap_login_creates_the_mailbox_and_the_second_rewrites_nothing() {
    let mut s = Stack::with_database();
    let right = s.pw(PASSWORD);
    let wrong = s.pw("Wr0ng-e2e-db-4720");
    let imap = s.dovecot.imap_port;
    assert_eq!(s.mailboxes(), 0);
    let w0 = s.writes();

    // First login of an LDAP user without a mailbox.
    let from = s.dovecot.log_len();
    // The mail process got its userdb fields from the new row.
    imap_login_and_select(
        imap,
        USER,
        &right,
        "first LOGIN (mailbox to create)",
        "SELECT INBOX after the first login",
    );
    let log = s.log_with(from, "lookup user=\"jdoe@example.org\" service=imap");
    assert!(
        log.contains("mailbox jdoe@example.org created from template \"Staff\""),
        "the helper's creation line in Dovecot's log:\n{log}"
    );
    assert!(
        helper_logged(&log, "login", USER, "imap", &["result=accept"]),
        "{log}"
    );
    assert!(
        helper_logged(&log, "lookup", USER, "imap", &["result=accept"]),
        "{log}"
    );

    // The rows: the mapped template (Staff: jdoe's otherMailbox has "staff").
    let db = s.db();
    assert_eq!(
        db.sql(
            "SELECT username, password, name, quota, local_part, domain, authsource, active FROM mailbox"
        )
        .trim(),
        format!("jdoe@example.org\t\tJohn Doe\t{STAFF_QUOTA}\tjdoe\texample.org\tldap\t1")
    );
    let attrs = attributes(db, USER);
    assert_eq!(attrs["attribute_hash"], php_hash(STAFF_TEMPLATE), "{attrs}");
    assert_eq!(attrs["pop3_access"], "0", "{attrs}");
    assert_eq!(attrs["imap_access"], "1", "{attrs}");
    assert_eq!(attrs["tls_enforce_in"], "1", "{attrs}");
    assert_eq!(attrs["quarantine_notification"], "daily", "{attrs}");
    assert_eq!(
        db.value("SELECT GROUP_CONCAT(tag_name ORDER BY tag_name) FROM tags_mailbox"),
        "ldap,staff"
    );
    assert_eq!(
        db.value("SELECT CONCAT(address, '>', goto, '>', active) FROM alias"),
        "jdoe@example.org>jdoe@example.org>1"
    );
    assert_eq!(
        db.value("SELECT CONCAT(spam_alias, syncjobs, app_passwds) FROM user_acl"),
        "110"
    );
    assert_eq!(
        db.value("SELECT CONCAT(bytes, '/', messages) FROM quota2"),
        "0/0"
    );
    assert!(s.writes() > w0, "the triggers did not count the creation");

    // Second login: accepted, and not one row written, not even with the same values.
    let before = s.snapshot();
    let w1 = s.writes();
    let from = s.dovecot.log_len();
    imap_login_and_select(
        imap,
        USER,
        &right,
        "second LOGIN",
        "SELECT INBOX after the second login",
    );
    let log = s.log_with(from, "lookup user=\"jdoe@example.org\" service=imap");
    assert!(
        !log.contains("created from template") && !log.contains("updated from the directory"),
        "{log}"
    );
    assert_eq!(s.snapshot(), before, "the second login changed rows");
    assert_eq!(s.writes(), w1, "the second login wrote rows");

    // Wrong password and unknown user: NO, nothing written.
    let r = imap_login(imap, USER, &wrong);
    assert!(
        r.starts_with("NO") && r.contains("[AUTHENTICATIONFAILED]"),
        "LOGIN with a wrong password: {r}"
    );
    let from = s.dovecot.log_len();
    let r = imap_login(imap, UNKNOWN, &right);
    assert!(
        r.starts_with("NO") && r.contains("[AUTHENTICATIONFAILED]"),
        "LOGIN as an unknown user: {r}"
    );
    let log = s.log_with(from, &format!("login user=\"{UNKNOWN}\" service=imap"));
    assert!(!log.contains("result=tempfail"), "{log}");
    assert_eq!(s.snapshot(), before);
    assert_eq!(s.writes(), w1);
    // The trigger counts an UPDATE that changes nothing (so the check above can fail).
    s.db().sql("UPDATE mailbox SET name = name");
    assert_eq!(s.writes(), w1 + 1);

    // A user of the second mapping ("default" -> Default, quota 0 =
    // unlimited, as in mailcow): a wrong password creates nothing, the
    // right one creates the mailbox.
    s.slapd.add(
        "dn: uid=newbie,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\n\
         objectClass: extensibleObject\nuid: newbie\ncn: New Bie\nsn: Bie\n\
         mail: newbie@example.org\notherMailbox: default\nuserPassword: newbiepw\n",
    );
    let newbie_pw = s.pw("newbiepw");
    let r = imap_login(imap, "newbie@example.org", &wrong);
    assert!(r.starts_with("NO"), "newbie, wrong password: {r}");
    assert_eq!(s.mailboxes(), 1);
    let r = imap_login(imap, "newbie@example.org", &newbie_pw);
    assert!(r.starts_with("OK"), "newbie, right password: {r}");
    assert_eq!(
        s.db().value(
            "SELECT CONCAT(quota, ' ', authsource) FROM mailbox WHERE username = 'newbie@example.org'"
        ),
        "0 ldap"
    );
    assert_eq!(
        attributes(s.db(), "newbie@example.org")["attribute_hash"],
        php_hash(DEFAULT_TEMPLATE)
    );
    assert_eq!(s.mailboxes(), 2);

    s.assert_logs_clean();
}

#[test]
fn db_pop3_refused_by_pop3_access_while_imap_works() {
    let mut s = Stack::with_database();
    let right = s.pw(PASSWORD);
    let (imap, pop3) = (s.dovecot.imap_port, s.dovecot.pop3_port);
    let pop3_login = |pw: &str| {
        let mut pop = Pop3::connect(pop3);
        let r = pop.login(USER, pw);
        let stat = r.starts_with("+OK").then(|| pop.cmd("STAT"));
        let _ = pop.cmd("QUIT");
        (r, stat)
    };

    // IMAP creates the mailbox from Staff, whose pop3_access is 0.
    let r = imap_login(imap, USER, &right);
    assert!(r.starts_with("OK"), "IMAP LOGIN: {r}");
    assert_eq!(attributes(s.db(), USER)["pop3_access"], "0");

    let from = s.dovecot.log_len();
    let (r, _) = pop3_login(&right);
    assert!(
        r.starts_with("-ERR [AUTH]"),
        "POP3 with pop3_access \"0\" must be refused: {r}"
    );
    let log = s.log_with(from, "login user=\"jdoe@example.org\" service=pop3");
    assert!(
        helper_logged(
            &log,
            "login",
            USER,
            "pop3",
            &["result=reject", "pop3_access is off"]
        ),
        "the helper's reason in Dovecot's log:\n{log}"
    );
    // IMAP still works with the same password.
    let r = imap_login(imap, USER, &right);
    assert!(
        r.starts_with("OK"),
        "IMAP LOGIN after the POP3 refusal: {r}"
    );

    // The admin allows POP3 for this mailbox: it logs in (the refusal above
    // came from the flag, not from anything else about POP3).
    s.set_flag(USER, "pop3_access", "1");
    let (r, stat) = pop3_login(&right);
    assert!(r.starts_with("+OK"), "POP3 with pop3_access \"1\": {r}");
    let stat = stat.unwrap();
    assert!(stat.starts_with("+OK 0 0"), "STAT: {stat}");
    // And the next login did not put the template's "0" back.
    assert_eq!(attributes(s.db(), USER)["pop3_access"], "1");
    // Off again: refused again.
    s.set_flag(USER, "pop3_access", "0");
    let (r, _) = pop3_login(&right);
    assert!(r.starts_with("-ERR [AUTH]"), "POP3 switched off again: {r}");

    s.assert_logs_clean();
}

#[test]
fn db_smtp_auth_refused_by_smtp_access() {
    let mut s = Stack::with_database().with_postfix();
    let right = s.pw(PASSWORD);
    let port = s.postfix().smtp_port;
    let smtp_auth = |pw: &str| smtp_auth_plain(port, USER, pw);

    // SMTP AUTH is a first login too: it creates the mailbox (Staff: smtp_access 1).
    let from = s.dovecot.log_len();
    let r = smtp_auth(&right);
    assert!(r[0].starts_with("235 "), "SMTP AUTH, first login: {r:?}");
    let log = s.log_with(from, "login user=\"jdoe@example.org\" service=smtp");
    assert!(
        log.contains("mailbox jdoe@example.org created from template \"Staff\""),
        "{log}"
    );
    assert_eq!(attributes(s.db(), USER)["smtp_access"], "1");

    // The admin turns SMTP off for the mailbox: 535, and the helper says why.
    s.set_flag(USER, "smtp_access", "0");
    let from = s.dovecot.log_len();
    let r = smtp_auth(&right);
    assert!(
        r[0].starts_with("535 "),
        "SMTP AUTH with smtp_access \"0\": {r:?}"
    );
    let log = s.log_with(from, "login user=\"jdoe@example.org\" service=smtp");
    assert!(
        helper_logged(
            &log,
            "login",
            USER,
            "smtp",
            &["result=reject", "smtp_access is off"]
        ),
        "the helper's reason in Dovecot's log:\n{log}"
    );
    // IMAP is not affected.
    let r = imap_login(s.dovecot.imap_port, USER, &right);
    assert!(
        r.starts_with("OK"),
        "IMAP LOGIN with smtp_access \"0\": {r}"
    );
    // On again: 235.
    s.set_flag(USER, "smtp_access", "1");
    let r = smtp_auth(&right);
    assert!(
        r[0].starts_with("235 "),
        "SMTP AUTH, smtp_access back on: {r:?}"
    );

    s.assert_logs_clean();
}

#[test]
fn db_doveadm_user_answers_from_the_mailbox_table() {
    let mut s = Stack::with_database();
    let right = s.pw(PASSWORD);

    // LDAP knows jdoe, but with a database a lookup answers from the mailbox
    // table only: no mailbox yet, so no user (LMTP would reject the recipient).
    let from = s.dovecot.log_len();
    let (status, fields, all) = s.dovecot.user_fields(USER);
    assert_eq!(
        status.code(),
        Some(67),
        "doveadm user before provisioning: {all}"
    );
    assert!(all.contains("doesn't exist"), "{all}");
    assert!(fields.is_empty(), "{fields:?}");
    let log = s.log_with(from, "lookup user=\"jdoe@example.org\" service=doveadm");
    assert!(
        helper_logged(&log, "lookup", USER, "doveadm", &["result=unknown"]),
        "{log}"
    );
    assert_eq!(s.mailboxes(), 0, "a lookup never creates a mailbox");

    let r = imap_login(s.dovecot.imap_port, USER, &right);
    assert!(r.starts_with("OK"), "IMAP LOGIN: {r}");

    let (status, fields, all) = s.dovecot.user_fields(USER);
    assert!(status.success(), "doveadm user {USER}: {all}");
    let get = |k: &str| fields.get(k).map(String::as_str);
    assert_eq!(get("uid"), Some(MAIL_UID.to_string().as_str()), "{all}");
    assert_eq!(get("gid"), Some(MAIL_GID.to_string().as_str()), "{all}");
    assert_eq!(
        get("home"),
        Some(s.dovecot.home_of(USER).display().to_string().as_str()),
        "{all}"
    );
    assert_eq!(
        get("quota_rule"),
        Some(format!("*:bytes={STAFF_QUOTA}").as_str()),
        "{all}"
    );

    // The row is the source: an admin's quota change shows at the next lookup.
    s.db().sql(&format!(
        "UPDATE mailbox SET quota = {} WHERE username = '{USER}'",
        2 * STAFF_QUOTA
    ));
    let (status, fields, all) = s.dovecot.user_fields(USER);
    assert!(status.success(), "{all}");
    assert_eq!(
        fields.get("quota_rule").map(String::as_str),
        Some(format!("*:bytes={}", 2 * STAFF_QUOTA).as_str()),
        "{all}"
    );
    // A deactivated mailbox does not exist for deliveries.
    s.db().sql(&format!(
        "UPDATE mailbox SET active = 0 WHERE username = '{USER}'"
    ));
    let (status, _, all) = s.dovecot.user_fields(USER);
    assert_eq!(
        status.code(),
        Some(67),
        "doveadm user, inactive mailbox: {all}"
    );
    let (status, _, all) = s.dovecot.user_fields(UNKNOWN);
    assert_eq!(status.code(), Some(67), "doveadm user {UNKNOWN}: {all}");
    assert!(all.contains("doesn't exist"), "{all}");

    s.assert_logs_clean();
}
