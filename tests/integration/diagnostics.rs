//! The admin's tools: `test USER` and `connection-test`, run as an admin would.

use crate::provision::Env as DbEnv;
use crate::support::slapd::{BASE, READER_DN, READER_PW};
use crate::support::{admin, free_port, write_config, SilentServer, Slapd};
use tempfile::TempDir;

fn ldap_only(dir: &TempDir, ldap: &str) -> std::path::PathBuf {
    let text = format!("state_dir = \"{}\"\n{ldap}", dir.path().display());
    write_config(dir.path(), "config.toml", &text)
}

#[test]
fn test_user_prints_every_step() {
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start(dir.path());
    let cfg = ldap_only(
        &dir,
        &format!(
            "{}attribute_field = \"otherMailbox\"\n",
            slapd.ldap_section()
        ),
    );
    let r = admin(&cfg, &["test", "jdoe@example.org"], "secret1\n");
    assert_eq!(r.code, 0, "{r:?}");
    for want in [
        "config: ",
        &format!(
            "host 127.0.0.1:{}: connecting (plain LDAP (no TLS))",
            slapd.port
        ),
        &format!("service bind as {READER_DN}: ok"),
        &format!("search: base \"{BASE}\", scope subtree, filter (mail=jdoe@example.org)"),
        "search: found uid=jdoe,ou=people,dc=example,dc=org",
        "user bind as uid=jdoe,ou=people,dc=example,dc=org: ok",
        "attribute field othermailbox: staff, default",
        "RESULT: accepted as jdoe@example.org",
        "exit status as checkpassword: 0",
    ] {
        assert!(
            r.stdout.contains(want),
            "missing {want:?} in:\n{}",
            r.stdout
        );
    }
    assert!(
        !r.stdout.contains("secret1"),
        "the password is never printed"
    );
    let r = admin(&cfg, &["test", "jdoe@example.org"], "Wr0ng-pw-99\n");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("RESULT: reject - wrong password"),
        "{}",
        r.stdout
    );
    let r = admin(&cfg, &["test", "dup@example.org"], "duppw\n");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("uid=dup1") && r.stdout.contains("uid=dup2"),
        "both DNs shown: {}",
        r.stdout
    );
    let r = admin(&cfg, &["test", "--lookup", "nobody@example.org"], "");
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("search: no entry"), "{}", r.stdout);
    // An empty password from stdin is refused, never sent as a bind.
    let r = admin(&cfg, &["test", "jdoe@example.org"], "\n");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("empty password"), "{}", r.stdout);
}

#[test]
fn test_user_explains_an_unreachable_host() {
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start(dir.path());
    let refused = free_port();
    let cfg = ldap_only(
        &dir,
        &format!(
            "[ldap]\nhosts = \"127.0.0.1:{refused}, 127.0.0.1:{}\"\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\nbind_password = \"{READER_PW}\"\n",
            slapd.port
        ),
    );
    let r = admin(&cfg, &["test", "jdoe@example.org"], "secret1\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("host 127.0.0.1:{refused}: FAILED")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("nothing listens there"),
        "the likely fix is named: {}",
        r.stdout
    );
}

#[test]
fn connection_test_checks_every_layer() {
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start(dir.path());
    let silent = SilentServer::start();
    let refused = free_port();
    let section = format!(
        "[ldap]\nhosts = \"127.0.0.1:{refused}, 127.0.0.1:{}, localhost:{}\"\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\n\
         bind_password = \"{READER_PW}\"\nattribute_field = \"otherMailbox\"\nconnect_timeout_ms = 500\ntimeout_ms = 500\n",
        silent.port, slapd.port
    );
    let cfg = ldap_only(&dir, &section);
    let r = admin(&cfg, &["connection-test"], "");
    assert_eq!(r.code, 0, "one host passes: {r:?}");
    assert!(
        r.stdout
            .contains(&format!("[FAIL] TCP connect 127.0.0.1:{refused}")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("did not answer in time"),
        "silent host explained: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("base DN \"{BASE}\" readable")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("filter (mail=*): "), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("attribute field othermailbox: present on 2 of"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("RESULT: 1 of 3 host(s) passed"),
        "{}",
        r.stdout
    );

    // A wrong service password fails the host, with the fix.
    let cfg = ldap_only(
        &dir,
        &section.replace(
            &format!("bind_password = \"{READER_PW}\""),
            "bind_password = \"nope\"",
        ),
    );
    let r = admin(&cfg, &["connection-test"], "");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("check ldap.bind_dn and ldap.bind_password"),
        "{}",
        r.stdout
    );
}

#[test]
fn connection_test_shows_the_certificate_it_could_not_verify() {
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start(dir.path());
    let section = |extra: &str| {
        format!(
            "[ldap]\nhosts = \"localhost:{}\"\nuse_ssl = true\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\nbind_password = \"{READER_PW}\"\n{extra}\n",
            slapd.ldaps_port
        )
    };
    let r = admin(&ldap_only(&dir, &section("")), &["connection-test"], "");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("set ldap.ca_file"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("the server presents: subject \"CN=localhost\", issuer \"CN=Test CA\""),
        "{}",
        r.stdout
    );
    let ca = slapd.pki.ca.display().to_string();
    let r = admin(
        &ldap_only(&dir, &section(&format!("ca_file = \"{ca}\""))),
        &["connection-test"],
        "",
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("certificate verified: subject \"CN=localhost\""),
        "{}",
        r.stdout
    );
    // StartTLS against the same server.
    let starttls = format!(
        "[ldap]\nhosts = \"localhost:{}\"\nuse_tls = true\nca_file = \"{ca}\"\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\nbind_password = \"{READER_PW}\"\n",
        slapd.port
    );
    let r = admin(&ldap_only(&dir, &starttls), &["connection-test"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("StartTLS handshake, certificate verified"),
        "{}",
        r.stdout
    );
}

#[test]
fn troubleshooting_checks_and_dry_run_with_a_database() {
    let e = DbEnv::new();
    let cfg = e.config();
    // Dry run: the plan is shown, nothing is written.
    let r = admin(
        &cfg,
        &["test", "--dry-run", "jdoe@example.org"],
        "secret1\n",
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("dry run: would create mailbox jdoe@example.org"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("[ ok ] mail domain example.org: exists and is active"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("\"default\" maps to template \"Default\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("[ ok ] domain limits: room for a new mailbox of unlimited quota"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("[ ok ] LDAP filter"), "{}", r.stdout);
    assert_eq!(e.count("mailbox"), 0, "dry run wrote a mailbox");
    // A full domain is named as such.
    e.db.sql("UPDATE domain SET mailboxes = 0");
    let r = admin(
        &cfg,
        &["test", "--dry-run", "jdoe@example.org"],
        "secret1\n",
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("[FAIL] domain limits"), "{}", r.stdout);
    // A filter that excludes the user is reported as the cause.
    e.db.sql("UPDATE domain SET mailboxes = 10");
    let cfg2 = e.config_with("filter = \"(objectClass=organizationalRole)\"\n", "");
    let r = admin(&cfg2, &["test", "jdoe@example.org"], "secret1\n");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("does not pass ldap.filter"),
        "{}",
        r.stdout
    );
    // connection-test checks the database and the mapped templates.
    let cfg = e.config();
    let r = admin(&cfg, &["connection-test"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("attribute_mapping \"default\" -> template \"Default\" exists"),
        "{}",
        r.stdout
    );
    e.db.sql("DELETE FROM templates WHERE template = 'Staff'");
    let r = admin(&cfg, &["connection-test"], "");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("template \"Staff\" does not exist"),
        "{}",
        r.stdout
    );
}
