//! `[mailcow] alias_attributes`: aliases from the directory, against the
//! suite's slapd (OpenLDAP's `mailLocalAddress`, misc.schema) and MariaDB
//! with mailcow's schema: written as mailcow's mailbox('add', 'alias')
//! writes them (functions.mailbox.inc.php), kept in step at login and by
//! `sync`, an admin's alias never touched.

use crate::provision::Env;
use crate::support::admin;
use crate::support::redis::Redis;
use mailcow_ldap_auth::mailcow::DIRECTORY_ALIAS_MARK;
use std::path::PathBuf;

const USER: &str = "jdoe@example.org";
const DN: &str = "uid=jdoe,ou=people,dc=example,dc=org";

/// The slapd/MariaDB pair of the provisioning tests, with an alias domain,
/// room for aliases, and a hand-made alias `hand@example.org` to jdoe.
fn env() -> Env {
    let e = Env::new();
    e.db.sql(
        "UPDATE domain SET aliases = 400;\
         INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('alias.example', 'example.org');\
         INSERT INTO alias (address, goto, domain, private_comment) VALUES ('hand@example.org', 'jdoe@example.org', 'example.org', 'made by an admin');",
    );
    e.slapd.modify(&format!(
        "dn: {DN}\nchangetype: modify\nadd: mailLocalAddress\n\
         mailLocalAddress: JD@example.org\n\
         mailLocalAddress: smtp:typed@Example.org\n\
         mailLocalAddress: X500:/o=Corp/cn=jdoe\n\
         mailLocalAddress: jd@alias.example\n\
         mailLocalAddress: jd@unknown.example\n\
         mailLocalAddress: hand@example.org\n\
         mailLocalAddress: jdoe@example.org\n"
    ));
    e
}

fn config(e: &Env, extra: &str) -> PathBuf {
    e.config_with(
        "",
        &format!("[mailcow]\nalias_attributes = [\"mailLocalAddress\", \"mail\"]\n{extra}"),
    )
}

/// The aliases other than the mailbox's own: address, goto, domain, active,
/// sogo_visible, internal, sender_allowed, public comment, whether ours.
fn aliases(e: &Env) -> Vec<String> {
    e.db.sql(&format!(
        "SELECT address, goto, domain, active, sogo_visible, internal, sender_allowed, \
         IFNULL(public_comment, 'NULL'), private_comment = '{DIRECTORY_ALIAS_MARK}', created IS NOT NULL \
         FROM alias WHERE address != goto ORDER BY address"
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The aliases SOGo's row of the mailbox lists.
fn sogo_aliases(e: &Env) -> String {
    e.db.value(&format!(
        "SELECT aliases FROM _sogo_static_view WHERE c_uid = '{USER}'"
    ))
}

fn ours(a: &str, domain: &str, active: u8) -> String {
    format!("{a}\t{USER}\t{domain}\t{active}\t1\t0\t1\t\t1\t1")
}

const HAND: &str = "hand@example.org\tjdoe@example.org\texample.org\t1\t1\t0\t1\tNULL\t0\t1";

#[test]
fn first_login_adds_the_directory_aliases_and_later_logins_follow_them() {
    let e = env();
    let cfg = config(&e, "");
    let before = e.snapshot();

    // Dry run of the first login: says so, writes nothing.
    let r = admin(&cfg, &["test", "--dry-run", USER], "secret1\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("would then add the directory's aliases")
            && r.stdout.contains("jd@example.org"),
        "{}",
        r.stdout
    );
    assert_eq!(e.snapshot(), before);

    let r = e.login(&cfg, USER, "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    // Typed `smtp:` kept, `X500:` skipped, lower-cased, the own address
    // skipped, an alias domain accepted, an unknown domain skipped, the
    // hand-made alias untouched, `mail`'s second value an alias too.
    assert_eq!(
        aliases(&e),
        [
            HAND.to_owned(),
            ours("jd@alias.example", "alias.example", 1),
            ours("jd@example.org", "example.org", 1),
            ours("john.doe@example.org", "example.org", 1),
            ours("typed@example.org", "example.org", 1),
        ]
    );
    assert!(
        r.stderr.contains("hand@example.org") && r.stderr.contains("not made by mailcow-ldap-auth"),
        "the conflict is a warning at login: {}",
        r.stderr
    );
    // SOGo's row lists the active, visible aliases (update_sogo_static_view).
    assert_eq!(
        sogo_aliases(&e),
        "hand@example.org jd@alias.example jd@example.org john.doe@example.org typed@example.org"
    );

    // A value gone from the directory, one added.
    e.slapd.modify(&format!(
        "dn: {DN}\nchangetype: modify\ndelete: mailLocalAddress\nmailLocalAddress: JD@example.org\n-\n\
         add: mailLocalAddress\nmailLocalAddress: new@example.org\n"
    ));
    // The dry run shows both and changes nothing.
    let before = e.snapshot();
    let r = admin(&cfg, &["test", "--dry-run", USER], "secret1\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("would write: alias new@example.org -> jdoe@example.org added")
            && r.stdout
                .contains("would write: alias jd@example.org -> jdoe@example.org removed"),
        "{}",
        r.stdout
    );
    assert_eq!(e.snapshot(), before);

    let r = e.login(&cfg, USER, "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        aliases(&e),
        [
            HAND.to_owned(),
            ours("jd@alias.example", "alias.example", 1),
            ours("john.doe@example.org", "example.org", 1),
            ours("new@example.org", "example.org", 1),
            ours("typed@example.org", "example.org", 1),
        ]
    );
    assert_eq!(
        sogo_aliases(&e),
        "hand@example.org jd@alias.example john.doe@example.org new@example.org typed@example.org"
    );

    // The hand-made alias is no longer wanted: still the admin's, still there.
    e.slapd.modify(&format!(
        "dn: {DN}\nchangetype: modify\ndelete: mailLocalAddress\nmailLocalAddress: hand@example.org\n"
    ));
    let r = e.login(&cfg, USER, "secret1");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(aliases(&e)[0], HAND);
}

#[test]
fn sync_adds_removes_and_deactivates_with_the_mailbox() {
    let e = env();
    let redis = Redis::start(e.path());
    let cfg = config(
        &e,
        &format!(
            "redis_url = \"{}\"\n\n[sync]\nimport_users = true\nperiodic_full_sync = true\n",
            redis.url()
        ),
    );
    let before = e.snapshot();
    let r = admin(&cfg, &["sync", "--force", "--dry-run"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.snapshot(), before, "a dry run writes nothing");

    let r = admin(&cfg, &["sync", "--force"], "");
    assert_eq!(r.code, 0, "{r:?}");
    let ours_now = aliases(&e);
    assert_eq!(
        ours_now,
        [
            HAND.to_owned(),
            ours("jd@alias.example", "alias.example", 1),
            ours("jd@example.org", "example.org", 1),
            ours("john.doe@example.org", "example.org", 1),
            ours("typed@example.org", "example.org", 1),
        ]
    );
    let log = redis.cron_log().join("\n");
    assert!(
        log.contains("alias jd@example.org -> jdoe@example.org added"),
        "{log}"
    );
    // The conflict once per run, naming both owners.
    assert_eq!(
        log.matches("alias hand@example.org: wanted by the directory for jdoe@example.org")
            .count(),
        1,
        "{log}"
    );

    // A removal in the directory: the dry run shows it, the run does it.
    e.slapd.modify(&format!(
        "dn: {DN}\nchangetype: modify\ndelete: mailLocalAddress\nmailLocalAddress: jd@alias.example\n"
    ));
    let before = e.snapshot();
    let r = admin(&cfg, &["sync", "--force", "--dry-run"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(e.snapshot(), before);
    let r = admin(&cfg, &["sync", "--force"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!aliases(&e)
        .iter()
        .any(|a| a.starts_with("jd@alias.example")));

    // An admin deactivates the mailbox: the next run deactivates our
    // aliases (mail to them stops with the mailbox's), never the admin's.
    e.db.sql(&format!(
        "UPDATE mailbox SET active = 0 WHERE username = '{USER}'"
    ));
    let r = admin(&cfg, &["sync", "--force"], "");
    assert_eq!(r.code, 0, "{r:?}");
    let now = aliases(&e);
    assert_eq!(now[0], HAND);
    assert!(
        now[1..]
            .iter()
            .all(|a| a.contains(&format!("{USER}\texample.org\t0\t"))),
        "{now:?}"
    );
    // And back.
    e.db.sql(&format!(
        "UPDATE mailbox SET active = 1 WHERE username = '{USER}'"
    ));
    let r = admin(&cfg, &["sync", "--force"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(aliases(&e)[1..]
        .iter()
        .all(|a| a.contains(&format!("{USER}\texample.org\t1\t"))));
}
