//! `sync` against real slapd, MariaDB and Redis: import, full sync,
//! deprovisioning with its safety nets, locking, and mailcow's CRON_LOG.

use crate::provision::DEFAULT_TEMPLATE;
use crate::support::mariadb::Db;
use crate::support::redis::Redis;
use crate::support::slapd::BASE_LDIF;
use crate::support::{
    admin, checkpassword, creds, free_port, lookup, write_config, Run, Slapd, StubReply,
};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The base directory plus `n` generated users u0..u{n-1}@example.org (password "pw-N").
pub fn directory(n: usize) -> String {
    let mut l = BASE_LDIF.to_owned();
    for i in 0..n {
        l.push_str(&format!(
            "\ndn: uid=u{i},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nobjectClass: extensibleObject\n\
             uid: u{i}\ncn: User {i}\nsn: U{i}\ndisplayName: User Number {i}\nmail: u{i}@example.org\notherMailbox: default\nuserPassword: pw-{i}\n"
        ));
    }
    l
}

struct Env {
    dir: TempDir,
    slapd: Slapd,
    db: Db,
    redis: Redis,
}

impl Env {
    fn new(users: usize, slapd_extra: &str) -> Env {
        let dir = TempDir::new().unwrap();
        let slapd = Slapd::start_with(dir.path(), &directory(users), slapd_extra);
        let db = Db::new();
        db.sql(&format!(
            "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active) VALUES ('example.org', 10000, 10, 10240, 10240000, 1);\
             INSERT INTO templates (template, type, attributes) VALUES ('Default', 'mailbox', '{DEFAULT_TEMPLATE}');"
        ));
        let redis = Redis::start(dir.path());
        Env {
            dir,
            slapd,
            db,
            redis,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self, sync: &str) -> PathBuf {
        self.config_named("config.toml", sync, &self.redis.url())
    }

    fn config_named(&self, name: &str, sync: &str, redis_url: &str) -> PathBuf {
        let text = format!(
            "state_dir = \"{}\"\n{}attribute_field = \"otherMailbox\"\n{}\n\
             [[attribute_mapping]]\nattribute = \"default\"\ntemplate = \"Default\"\n\n\
             [mailcow]\nredis_url = \"{redis_url}\"\n\n[sync]\nimport_users = true\nperiodic_full_sync = true\n{sync}\n{page}",
            self.path().display(),
            self.slapd.ldap_section(),
            self.db.section(),
            page = if sync.contains("page_size") { "" } else { "page_size = 50\n" },
        );
        write_config(self.path(), name, &text)
    }

    fn sync(&self, cfg: &Path, args: &[&str]) -> Run {
        let mut a = vec!["sync"];
        a.extend_from_slice(args);
        admin(cfg, &a, "")
    }

    fn count(&self, sql_where: &str) -> usize {
        self.db
            .value(&format!("SELECT COUNT(*) FROM mailbox WHERE {sql_where}"))
            .parse()
            .unwrap()
    }

    fn snapshot(&self) -> String {
        self.db.sql(
            "SELECT username, name, quota, attributes, active, authsource, modified FROM mailbox ORDER BY username;\
             SELECT address, goto, active FROM alias ORDER BY address; SELECT * FROM user_acl ORDER BY username;",
        )
    }

    fn delete_user(&self, i: usize) {
        self.slapd.modify(&format!(
            "dn: uid=u{i},ou=people,dc=example,dc=org\nchangetype: delete\n"
        ));
    }
}

#[test]
fn import_then_no_op_then_template_change() {
    let e = Env::new(300, "");
    // A mailcow mailbox among the directory users stays as it is.
    e.db.sql("INSERT INTO mailbox (username, password, name, quota, local_part, domain, attributes, authsource, active) \
              VALUES ('u5@example.org', '{SSHA256}x', 'Local Five', 1, 'u5', 'example.org', '{}', 'mailcow', 1)");
    // A second entry claiming u7's address.
    e.slapd.add("dn: uid=twin,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nobjectClass: extensibleObject\nuid: twin\ncn: Twin\nsn: T\nmail: u7@example.org\notherMailbox: default\nuserPassword: x\n");
    let cfg = e.config("");
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    // 298 generated (u5 is mailcow's, u7's address has a twin in a later
    // page: left alone) + jdoe; nomail has no mapped value.
    assert_eq!(e.count("authsource = 'ldap'"), 299, "{}", r.stdout);
    assert!(r.stdout.contains("created 299"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("address conflict: 2 directory entries have the address u7@example.org"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("skip nomail@example.org: no attribute mapping matched"),
        "{}",
        r.stdout
    );
    assert_eq!(e.db.value("SELECT CONCAT(name, '/', password, '/', authsource) FROM mailbox WHERE username = 'u5@example.org'"), "Local Five/{SSHA256}x/mailcow");
    assert_eq!(e.count("username = 'u7@example.org'"), 0);
    assert_eq!(e.db.value("SELECT COUNT(*) FROM alias"), "299");

    // A second run changes nothing.
    let before = e.snapshot();
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("created 0, updated 0"), "{}", r.stdout);
    assert_eq!(e.snapshot(), before);

    // The template changes: every ldap mailbox is updated, once.
    let changed = DEFAULT_TEMPLATE.replace("\"quota\":0", "\"quota\":5242880");
    e.db.sql(&format!("UPDATE templates SET attributes = '{changed}'"));
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("updated 299"), "{}", r.stdout);
    assert_eq!(e.count("authsource = 'ldap' AND quota = 5242880"), 299);
    assert_eq!(
        e.db.value("SELECT quota FROM mailbox WHERE username = 'u5@example.org'"),
        "1"
    );
    let r = e.sync(&cfg, &["--force"]);
    assert!(r.stdout.contains("updated 0"), "{}", r.stdout);

    // CRON_LOG: JSON with the right fields, a summary among them.
    let log = e.redis.cron_log();
    assert!(!log.is_empty());
    for line in &log {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(v["task"], "LDAP Sync (mailcow-ldap-auth)");
        assert!(v["time"].as_u64().unwrap() > 1_700_000_000);
        assert!(
            ["info", "warning", "err"].contains(&v["priority"].as_str().unwrap()),
            "{line}"
        );
        assert!(v["message"].is_string());
    }
    assert!(
        log.iter().any(|l| l.contains("create u8@example.org")),
        "per-user lines"
    );
    assert!(
        log[0].contains("done: 303 directory entries"),
        "newest first is the summary: {}",
        log[0]
    );
}

#[test]
fn interval_force_dry_run_and_switches() {
    let e = Env::new(5, "");
    // Dry run: the plan is printed, nothing is written, the interval is not started.
    let cfg = e.config("interval_minutes = 60\n");
    let r = e.sync(&cfg, &["--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("would create u1@example.org"),
        "{}",
        r.stdout
    );
    assert_eq!(e.count("1"), 0);
    // First real run, then the interval holds it back.
    assert_eq!(e.sync(&cfg, &[]).code, 0);
    assert_eq!(e.count("1"), 6);
    let logged = e.redis.cron_log().len();
    e.db.sql("DELETE FROM mailbox WHERE username = 'u1@example.org'; DELETE FROM alias WHERE address = 'u1@example.org'; \
              DELETE FROM quota2 WHERE username = 'u1@example.org'; DELETE FROM quota2replica WHERE username = 'u1@example.org'");
    let r = e.sync(&cfg, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("not due yet"), "{}", r.stdout);
    assert_eq!(e.count("1"), 5);
    assert_eq!(
        e.redis.cron_log().len(),
        logged,
        "'not due yet' is not written to CRON_LOG"
    );
    // --force runs now.
    assert_eq!(e.sync(&cfg, &["--force"]).code, 0);
    assert_eq!(e.count("1"), 6);
    // Neither switch on: nothing to do.
    let off = e.config_named("off.toml", "", &e.redis.url()).to_owned();
    let text = std::fs::read_to_string(&off)
        .unwrap()
        .replace("import_users = true", "import_users = false")
        .replace("periodic_full_sync = true", "periodic_full_sync = false");
    let off = write_config(e.path(), "off.toml", &text);
    let r = e.sync(&off, &["--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("nothing to do"), "{}", r.stdout);
}

#[test]
fn one_sync_at_a_time() {
    let e = Env::new(200, "");
    let cfg = e.config("");
    // While another process holds the lock, a sync says so and exits 0.
    let lock = std::fs::File::create(e.path().join("sync.lock")).unwrap();
    lock.lock().unwrap();
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("already running"), "{}", r.stdout);
    assert_eq!(e.count("1"), 0);
    drop(lock);
    // Two started together: one does the work.
    let (c1, c2) = (cfg.clone(), cfg.clone());
    let a = std::thread::spawn(move || admin(&c1, &["sync"], ""));
    let b = std::thread::spawn(move || admin(&c2, &["sync"], ""));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!((a.code, b.code), (0, 0), "{a:?}\n{b:?}");
    let ran = [&a, &b]
        .iter()
        .filter(|r| r.stdout.contains("done:"))
        .count();
    assert_eq!(ran, 1, "{a:?}\n{b:?}");
    assert_eq!(e.count("1"), 201);
}

#[test]
fn sync_racing_first_logins_makes_no_duplicates() {
    let e = Env::new(60, "");
    let cfg = e.config("page_size = 10\n");
    let sync_cfg = cfg.clone();
    let syncer = std::thread::spawn(move || admin(&sync_cfg, &["sync", "--force"], ""));
    let logins: Vec<_> = (0..20)
        .map(|i| {
            let cfg = cfg.clone();
            let dir = e.path().join(format!("login{i}"));
            std::thread::spawn(move || {
                std::fs::create_dir_all(&dir).unwrap();
                let reply = StubReply::create(&dir);
                checkpassword(
                    &cfg,
                    &creds(&format!("u{i}@example.org"), &format!("pw-{i}")),
                    &[("SERVICE", "imap")],
                    &reply,
                )
            })
        })
        .collect();
    for l in logins {
        let r = l.join().unwrap();
        assert_eq!(r.code, 0, "{r:?}");
    }
    let s = syncer.join().unwrap();
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains("failed 0"), "{}", s.stdout);
    assert_eq!(e.count("1"), 61);
    assert_eq!(e.db.value("SELECT COUNT(*) FROM alias"), "61");
    assert_eq!(e.db.value("SELECT COUNT(*) FROM user_acl"), "61");
}

#[test]
fn departed_users_are_marked_deactivated_and_reactivated() {
    let e = Env::new(20, "");
    let cfg = e.config(
        "deactivate_missing = true\nmissing_grace_hours = 0\nmax_deactivate_percent = 20\n",
    );
    assert_eq!(e.sync(&cfg, &["--force"]).code, 0);
    // An admin-disabled mailbox is left alone by all of this.
    e.db.sql("UPDATE mailbox SET active = 0 WHERE username = 'u9@example.org'");
    e.delete_user(3);
    e.delete_user(9);
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("mark u3@example.org missing"),
        "{}",
        r.stdout
    );
    assert_eq!(
        e.db.value("SELECT active FROM mailbox WHERE username = 'u3@example.org'"),
        "1",
        "only marked on the first run"
    );
    assert_ne!(e.db.value("SELECT JSON_VALUE(attributes, '$.ldap_missing_since') FROM mailbox WHERE username = 'u3@example.org'"), "NULL");
    // Still missing on the next complete run, grace over: deactivated, never deleted.
    let r = e.sync(&cfg, &["--force"]);
    assert!(
        r.stdout.contains("deactivate u3@example.org"),
        "{}",
        r.stdout
    );
    assert_eq!(
        e.db.value("SELECT active FROM mailbox WHERE username = 'u3@example.org'"),
        "0"
    );
    assert_eq!(
        e.db.value("SELECT active FROM alias WHERE address = 'u3@example.org'"),
        "0"
    );
    assert_eq!(e.count("1"), 21);
    let r = lookup(&cfg, "u3@example.org", &StubReply::create(e.path()));
    assert_eq!(
        r.code, 3,
        "a deactivated mailbox is unknown to lookups: {r:?}"
    );
    // Back in the directory: reactivated; the admin-disabled one stays disabled.
    e.slapd.add(
        &directory(4)
            .split("\n\n")
            .filter(|b| b.contains("uid=u3,"))
            .collect::<Vec<_>>()
            .join("\n\n"),
    );
    e.slapd.add(
        &directory(10)
            .split("\n\n")
            .filter(|b| b.contains("uid=u9,"))
            .collect::<Vec<_>>()
            .join("\n\n"),
    );
    let r = e.sync(&cfg, &["--force"]);
    assert!(
        r.stdout.contains("reactivate u3@example.org"),
        "{}",
        r.stdout
    );
    assert_eq!(
        e.db.value("SELECT active FROM mailbox WHERE username = 'u3@example.org'"),
        "1"
    );
    assert_eq!(
        e.db.value("SELECT active FROM alias WHERE address = 'u3@example.org'"),
        "1"
    );
    assert_eq!(e.db.value("SELECT JSON_EXISTS(attributes, '$.ldap_missing_since') FROM mailbox WHERE username = 'u3@example.org'"), "0");
    assert_eq!(
        e.db.value("SELECT active FROM mailbox WHERE username = 'u9@example.org'"),
        "0"
    );
}

#[test]
fn the_cap_and_an_incomplete_search_deactivate_nothing() {
    let e = Env::new(20, "");
    let cfg = e.config(
        "deactivate_missing = true\nmissing_grace_hours = 0\nmax_deactivate_percent = 10\n",
    );
    assert_eq!(e.sync(&cfg, &["--force"]).code, 0);
    for i in 0..5 {
        e.delete_user(i);
    }
    // 5 of 21 missing is over 10 %: nothing is marked, and the run says why.
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("more than sync.max_deactivate_percent = 10%"),
        "{}",
        r.stdout
    );
    assert_eq!(
        e.count("JSON_EXISTS(attributes, '$.ldap_missing_since')"),
        0
    );
}

#[test]
fn a_size_limited_search_is_incomplete() {
    // The server returns at most 30 entries to anyone: the search cannot complete.
    let e = Env::new(100, "limits * size.soft=30 size.hard=30 size.prtotal=30");
    let cfg = e.config(
        "deactivate_missing = true\nmissing_grace_hours = 0\nmax_deactivate_percent = 100\n",
    );
    e.db.sql("INSERT INTO mailbox (username, password, name, quota, local_part, domain, attributes, authsource, active) \
              VALUES ('u99@example.org', '', 'x', 1, 'u99', 'example.org', '{}', 'ldap', 1)");
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 111, "an incomplete search is a failed run: {r:?}");
    assert!(r.stdout.contains("did not complete"), "{}", r.stdout);
    assert_eq!(
        e.count("JSON_EXISTS(attributes, '$.ldap_missing_since') OR active = 0"),
        0,
        "nothing marked"
    );
    // The attempt was recorded, as a failure, and no completion time: the
    // next run backs off instead of repeating the full search a minute later.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e.path().join("sync-state.json")).unwrap()).unwrap();
    assert!(state["last_completed"].is_null(), "{state}");
    assert_eq!(state["failures"], 1, "{state}");
    assert!(state["last_attempt"].as_u64().is_some(), "{state}");
    let r = e.sync(&cfg, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("backing off after 1 failed run(s)") && !r.stdout.contains("started on"),
        "{}",
        r.stdout
    );
}

#[test]
fn redis_down_and_ldap_down() {
    let e = Env::new(10, "");
    let cfg = e.config_named(
        "noredis.toml",
        "",
        &format!("redis://:x@127.0.0.1:{}", free_port()),
    );
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.count("1"), 11);
    assert_eq!(
        r.stderr
            .matches("cannot write to mailcow's CRON_LOG")
            .count(),
        1,
        "reported once: {}",
        r.stderr
    );
    let mut e = e;
    let cfg = e.config("");
    e.slapd.stop();
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 111, "{r:?}");
}

/// Two directory entries with one address (ignoring case), on different
/// pages of the paged search: the run's first pass finds them, nothing is
/// created or updated for that address (neither entry wins, no row flips
/// between runs), its mailbox is not marked missing, and the conflict is an
/// error naming both DNs with the fix, in the summary and in CRON_LOG with
/// mailcow's "err"; the run still completes (exit 0), as with its other
/// per-user failures. (mailcow's crons/ldap-sync.php applies each entry in
/// turn: the last one wins.) Before the first pass, the first entry's page
/// created the mailbox and the later twin was only skipped.
#[test]
fn an_address_two_entries_share_across_pages_is_left_alone() {
    let e = Env::new(6, "");
    let cfg = e.config("page_size = 2\ndeactivate_missing = true\nmissing_grace_hours = 0\nmax_deactivate_percent = 100\n");
    assert_eq!(e.sync(&cfg, &["--force"]).code, 0);
    let person = |uid: &str, mail: &str, name: &str| {
        format!(
            "dn: uid={uid},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nobjectClass: extensibleObject\n\
             uid: {uid}\ncn: {name}\nsn: S\ndisplayName: {name}\nmail: {mail}\notherMailbox: default\nuserPassword: x\n"
        )
    };
    // A new address, its two entries four apart (pages of two); a twin of
    // an existing mailbox's address in other case, on a later page.
    e.slapd.add(&person("new1", "new@example.org", "New One"));
    for i in 0..3 {
        e.slapd.add(&person(
            &format!("filler{i}"),
            &format!("filler{i}@example.org"),
            "Filler",
        ));
    }
    e.slapd.add(&person("new2", "NEW@example.org", "New Two"));
    e.slapd
        .add(&person("twin3", "U3@Example.ORG", "Twin Of Three"));
    let u3_before =
        e.db.sql("SELECT * FROM mailbox WHERE username = 'u3@example.org'");
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.count("username = 'new@example.org'"), 0, "{r:?}");
    assert_eq!(e.count("username LIKE 'filler%'"), 3);
    assert_eq!(
        e.db.sql("SELECT * FROM mailbox WHERE username = 'u3@example.org'"),
        u3_before,
        "u3's mailbox untouched, not marked missing"
    );
    // The system log's lines (stderr here), with their level.
    let out = r.stderr.clone();
    for (address, dns) in [
        ("new@example.org", ["uid=new1,", "uid=new2,"]),
        ("u3@example.org", ["uid=u3,", "uid=twin3,"]),
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("directory entries have the address {address}")))
            .unwrap_or_else(|| panic!("no conflict line for {address}: {out}"));
        assert!(
            dns.iter().all(|d| line.contains(d))
                && line.contains("nothing is created or updated")
                && line.contains("give each entry its own address (mail)"),
            "{line}"
        );
        assert!(
            line.contains("error: sync: address conflict"),
            "an error line: {line}"
        );
    }
    assert!(out.contains("address conflicts 2"), "{out}");
    let log = e.redis.cron_log();
    let conflicts: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("address conflict:"))
        .collect();
    assert_eq!(conflicts.len(), 2, "{log:?}");
    assert!(
        conflicts.iter().all(|l| l.contains("\"priority\":\"err\"")),
        "{conflicts:?}"
    );
    // A dry run says the same and writes nothing.
    let r = e.sync(&cfg, &["--force", "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("address conflicts 2"), "{r:?}");
    // One entry gone: the address is synced again.
    e.slapd
        .modify("dn: uid=new2,ou=people,dc=example,dc=org\nchangetype: delete\n");
    assert_eq!(e.sync(&cfg, &["--force"]).code, 0);
    assert_eq!(
        e.db.value("SELECT name FROM mailbox WHERE username = 'new@example.org'"),
        "New One"
    );
}

/// A column of an unexpected type makes the sync a temporary failure (111)
/// naming the table and column, with nothing changed; the mysql crate's
/// typed reads, used before, panicked (exit 101, no word of the column).
#[test]
fn a_column_of_an_unexpected_type_fails_the_sync_temporarily() {
    let e = Env::new(3, "");
    let cfg = e.config("");
    assert_eq!(e.sync(&cfg, &["--force"]).code, 0);
    e.db.sql("ALTER TABLE mailbox MODIFY active VARCHAR(10) NULL; UPDATE mailbox SET active = NULL WHERE username = 'u1@example.org'");
    let before = e.snapshot();
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 111, "{r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
    assert!(
        r.stderr
            .contains("mailbox.active holds NULL where an integer was expected"),
        "{r:?}"
    );
    assert_eq!(e.snapshot(), before);
}

/// mailcow.redis_url as the Redis client reads it: its database number is
/// SELECTed (CRON_LOG lands in database 2, not 0), and a wrong password is
/// said once, without the password, and never fails the sync.
#[test]
fn redis_url_database_and_a_wrong_password() {
    let e = Env::new(2, "");
    let port = e.redis.port;
    let url = format!(
        "redis://:{}@127.0.0.1:{port}/2",
        crate::support::redis::PASSWORD
    );
    let cfg = e.config_named("db2.toml", "", &url);
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(e.redis.cron_log().is_empty(), "{:?}", e.redis.cron_log());
    let log = e.redis.cron_log_in(2);
    assert!(
        log.iter()
            .any(|l| l.contains("\"task\":\"LDAP Sync (mailcow-ldap-auth)\"")),
        "{log:?}"
    );
    let cfg = e.config_named(
        "wrong.toml",
        "",
        &format!("redis://:not-it-4711@127.0.0.1:{port}/0"),
    );
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stderr
            .matches("cannot write to mailcow's CRON_LOG")
            .count(),
        1,
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("not-it-4711"), "{}", r.stderr);
    assert!(e.redis.cron_log().is_empty());
}

#[test]
fn refusals_inside_a_page_roll_back_alone() {
    let e = Env::new(8, "");
    // Room for 5 of the 9 directory users (8 generated + jdoe), and an alias
    // that blocks one of them in the middle of the page.
    e.db.sql(
        "UPDATE domain SET mailboxes = 5; \
         INSERT INTO alias (address, goto, domain) VALUES ('u2@example.org', 'someone@else.org', 'example.org')",
    );
    let cfg = e.config("page_size = 50\n");
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 0, "per-user refusals do not fail the run: {r:?}");
    assert!(r.stdout.contains("created 5"), "{}", r.stdout);
    assert!(r.stdout.contains("failed 4"), "{}", r.stdout);
    assert!(
        r.stdout.contains("could not create u2@example.org"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("an alias u2@example.org -> someone@else.org already exists"),
        "{}",
        r.stdout
    );
    // In mailcow's Crontasks log as mailcow's crons write errors: priority "err".
    let failed: Vec<serde_json::Value> = e
        .redis
        .cron_log()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("could not create u2@example.org"))
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["priority"], "err");
    assert!(r.stdout.contains("Max. possible mailboxes"), "{}", r.stdout);
    // Exactly the created ones have rows, each complete; the refused ones have none.
    assert_eq!(e.count("1"), 5);
    for table in ["quota2", "quota2replica", "user_acl"] {
        assert_eq!(
            e.db.value(&format!("SELECT COUNT(*) FROM {table}")),
            "5",
            "{table}"
        );
    }
    assert_eq!(
        e.db.value("SELECT COUNT(*) FROM alias WHERE address = goto"),
        "5"
    );
    assert_eq!(
        e.db.value("SELECT goto FROM alias WHERE address = 'u2@example.org'"),
        "someone@else.org"
    );
    assert_eq!(e.count("username = 'u2@example.org'"), 0);
}

/// state_dir is shared with user `dovecot`: what is planted there must not be
/// followed. Before: a dangling `sync.lock` link made `sync` create its
/// target, a FIFO as `sync.lock` or `sync-state.json` hung it, and a FIFO as
/// `host-health.json` made every login exit 111.
#[test]
fn planted_links_and_fifos_in_state_dir_are_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let e = Env::new(3, "");
    let cfg = e.config("");
    let state = e.path();
    let elsewhere = TempDir::new().unwrap();
    let target = elsewhere.path().join("nologin");
    let mkfifo = |p: &Path| {
        let ok = std::process::Command::new("mkfifo")
            .arg(p)
            .status()
            .unwrap();
        assert!(ok.success());
    };

    // A dangling link as the lock: refused, its target never created.
    std::os::unix::fs::symlink(&target, state.join("sync.lock")).unwrap();
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 111, "{r:?}");
    assert!(!target.exists(), "sync created the link's target");
    std::fs::remove_file(state.join("sync.lock")).unwrap();

    // A FIFO as the lock: refused at once.
    mkfifo(&state.join("sync.lock"));
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 111, "{r:?}");
    assert!(
        r.stderr.contains("lock") || r.stdout.contains("lock"),
        "{r:?}"
    );
    std::fs::remove_file(state.join("sync.lock")).unwrap();

    // A FIFO as the state file: ignored (not due check skipped), the run goes on.
    mkfifo(&state.join("sync-state.json"));
    let r = e.sync(&cfg, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.count("1"), 4);
    let kind = std::fs::symlink_metadata(state.join("sync-state.json")).unwrap();
    assert!(
        kind.is_file(),
        "the FIFO was replaced by a regular state file"
    );

    // A FIFO as the hosts' health file: logins go on.
    mkfifo(&state.join("host-health.json"));
    let reply = StubReply::create(elsewhere.path());
    let r = checkpassword(&cfg, &creds("u1@example.org", "pw-1"), &[], &reply);
    assert_eq!(r.code, 0, "{r:?}");

    // Root refuses a state_dir every user may write.
    if crate::support::running_as_root() {
        let mode = std::fs::metadata(state).unwrap().permissions().mode();
        std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let r = e.sync(&cfg, &["--force"]);
        std::fs::set_permissions(state, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(r.code, 111, "{r:?}");
        assert!(
            r.stderr.contains("chmod o-w") || r.stdout.contains("chmod o-w"),
            "{r:?}"
        );
    }
}

/// A value from the directory cannot forge a log line: a display name with a
/// newline (base64 in LDIF) stays inside its own line, escaped, on stdout and
/// in the system log (stderr here).
#[test]
fn directory_values_never_break_a_log_line() {
    let e = Env::new(1, "");
    e.slapd.add(
        "dn: uid=mallory,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\n\
         objectClass: extensibleObject\nuid: mallory\ncn: Mallory\nsn: M\n\
         displayName:: TWFsbG9yeQpzeW5jOiBkb25lOiAwIGNyZWF0ZWQsIGZvcmdlZCBsaW5l\nmail: mallory@example.org\notherMailbox: default\nuserPassword: pw\n",
    );
    let cfg = e.config("");
    let r = e.sync(&cfg, &["--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    for out in [&r.stdout, &r.stderr] {
        assert!(
            !out.lines()
                .any(|l| l.starts_with("sync: done: 0 created, forged")
                    || l.starts_with("done: 0 created, forged")),
            "a forged line: {out}"
        );
    }
    assert!(
        r.stdout
            .contains("Mallory\\x0async: done: 0 created, forged line"),
        "{}",
        r.stdout
    );
}

/// SOGo's rows follow the sync in the same transactions: one per imported
/// mailbox, removed when sync deactivates it, back when it reactivates it
/// (mailcow's update_sogo_static_view() keeps rows of active 1 mailboxes only).
#[test]
fn sogo_rows_follow_import_deactivation_and_reactivation() {
    let e = Env::new(5, "");
    let cfg = e.config(
        "deactivate_missing = true\nmissing_grace_hours = 0\nmax_deactivate_percent = 100\n",
    );
    assert_eq!(e.sync(&cfg, &["--force"]).code, 0);
    let imported = e.count("authsource = 'ldap'");
    assert!(imported >= 5, "{imported}");
    assert_eq!(
        e.db.value("SELECT COUNT(*) FROM _sogo_static_view v JOIN mailbox m ON m.username = v.c_uid AND m.name = v.c_cn AND m.domain = v.domain"),
        imported.to_string()
    );
    let sogo = |u: &str| {
        e.db.value(&format!(
            "SELECT COUNT(*) FROM _sogo_static_view WHERE c_uid = '{u}'"
        ))
    };
    e.delete_user(3);
    assert_eq!(e.sync(&cfg, &["--force"]).code, 0);
    assert_eq!(sogo("u3@example.org"), "1", "only marked missing");
    let r = e.sync(&cfg, &["--force"]);
    assert!(
        r.stdout.contains("deactivate u3@example.org"),
        "{}",
        r.stdout
    );
    assert_eq!(sogo("u3@example.org"), "0");
    assert_eq!(
        e.db.value("SELECT COUNT(*) FROM _sogo_static_view"),
        (imported - 1).to_string()
    );
    e.slapd.add(
        &directory(4)
            .split("\n\n")
            .filter(|b| b.contains("uid=u3,"))
            .collect::<Vec<_>>()
            .join("\n\n"),
    );
    let r = e.sync(&cfg, &["--force"]);
    assert!(
        r.stdout.contains("reactivate u3@example.org"),
        "{}",
        r.stdout
    );
    assert_eq!(sogo("u3@example.org"), "1");
}

/// A template's rate limit goes to mailcow's Redis hash `RL_VALUE` for each
/// mailbox, as mailcow's ratelimit('edit', 'mailbox', ...) writes it
/// ("<n> / 1<frame>"), on import and when the template changes; an empty
/// rl_value (the shipped Default) removes it.
#[test]
fn template_rate_limits_go_to_rl_value() {
    let e = Env::new(3, "");
    let limited = DEFAULT_TEMPLATE
        .replace("\"rl_value\":\"\"", "\"rl_value\":\"10\"")
        .replace("\"rl_frame\":\"s\"", "\"rl_frame\":\"m\"");
    assert_ne!(limited, DEFAULT_TEMPLATE);
    e.db.sql(&format!("UPDATE templates SET attributes = '{limited}'"));
    let cfg = e.config("");
    let r = e.sync(&cfg, &["--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.redis.hget("RL_VALUE", "u1@example.org"), "10 / 1m");
    assert_eq!(e.redis.hget("RL_VALUE", "u2@example.org"), "10 / 1m");
    let hourly = limited
        .replace("\"rl_frame\":\"m\"", "\"rl_frame\":\"h\"")
        .replace("\"10\"", "\"250\"");
    e.db.sql(&format!("UPDATE templates SET attributes = '{hourly}'"));
    assert_eq!(e.sync(&cfg, &["--force"]).code, 0);
    assert_eq!(e.redis.hget("RL_VALUE", "u1@example.org"), "250 / 1h");
    e.db.sql(&format!(
        "UPDATE templates SET attributes = '{DEFAULT_TEMPLATE}'"
    ));
    assert_eq!(e.sync(&cfg, &["--force"]).code, 0);
    assert_eq!(e.redis.hget("RL_VALUE", "u1@example.org"), "");
}
