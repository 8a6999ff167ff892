//! Following mailcow's UI (System > Configuration > Access > Identity Provider):
//! the `identity_provider` rows changed under a running serve, against a
//! private slapd and MariaDB with mailcow's schema.

use crate::provision::Env;
use crate::support::serve::Serve;
use crate::support::slapd::{BASE, READER_DN, READER_PW};
use crate::support::{admin, write_config};
use std::time::{Duration, Instant};

const USER: &str = "jdoe@example.org";
const PASSWORD: &str = "secret1";
/// Generous bound for a change to be in effect (the refresh interval here is 1 s).
const IN_EFFECT: Duration = Duration::from_secs(20);

/// mailcow's UI rows for the LDAP provider, this slapd, login provisioning.
fn ui_rows(e: &Env) {
    e.db.sql(&format!(
        "INSERT INTO identity_provider (`key`, `value`) VALUES ('authsource', 'ldap'), ('host', '127.0.0.1'), \
         ('port', '{}'), ('basedn', '{BASE}'), ('username_field', 'mail'), ('filter', ''), \
         ('attribute_field', 'othermailbox'), ('binddn', '{READER_DN}'), ('bindpass', '{READER_PW}'), \
         ('use_ssl', ''), ('use_tls', ''), ('ignore_ssl_error', ''), ('mappers', '[\"default\"]'), \
         ('templates', '[\"Default\"]'), ('login_provisioning', '1'), ('import_users', '0'), \
         ('periodic_sync', '0'), ('sync_interval', '15')",
        e.slapd.port
    ));
}

fn set_row(e: &Env, key: &str, value: &str) {
    e.db.sql(&format!(
        "UPDATE identity_provider SET `value` = '{value}' WHERE `key` = '{key}'"
    ));
}

/// Ask serve until `/auth` answers `status`; the time it took.
fn until_status(serve: &Serve, status: u16, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let r = serve.auth(USER, PASSWORD, "imap");
        if r.status == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < IN_EFFECT,
            "{what}: still {} after {IN_EFFECT:?}, not {status}: {r:?}\n{}",
            r.status,
            serve.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_follows_identity_provider_changes_without_a_restart() {
    let e = Env::new();
    ui_rows(&e);
    let (section, port, socket) = Serve::section(e.path(), "");
    let text = format!(
        "state_dir = \"{}\"\nlog_target = \"stderr\"\n[ldap]\n{}\n\
         [mailcow]\nsettings_from_database = true\nsettings_refresh_seconds = 1\n\
         [dovecot]\nuid = \"5000\"\ngid = \"5000\"\n{section}",
        e.path().display(),
        e.db.section(),
    );
    let cfg = write_config(e.path(), "serve.toml", &text);
    let serve = Serve::start(&cfg, port, socket);
    until_status(&serve, 200, "as set up");

    // A rotated bind password, wrong here: the service bind fails, a temporary failure.
    set_row(&e, "bindpass", "not-the-password");
    let took = until_status(&serve, 503, "wrong bind password in the UI");
    eprintln!("a changed bind password was in effect after {took:?} (refresh every 1 s)");
    assert!(
        serve
            .log_text()
            .contains("Identity Provider settings changed: now in effect"),
        "{}",
        serve.log_text()
    );
    set_row(&e, "bindpass", READER_PW);
    until_status(&serve, 200, "bind password put right");

    // The provider switched away from LDAP: every login is "not ours" (401) and
    // goes on to mailcow's passdbs; /health says why nothing is probed.
    set_row(&e, "authsource", "keycloak");
    let took = until_status(&serve, 401, "provider switched to keycloak");
    eprintln!("the provider switched off was in effect after {took:?}");
    assert!(
        serve
            .log_text()
            .contains("Identity Provider is \"keycloak\", not LDAP"),
        "{}",
        serve.log_text()
    );
    let h = serve.http("GET", "/health", &[], "");
    assert_eq!(h.json["identity_provider"], "keycloak", "{h:?}");
    set_row(&e, "authsource", "ldap");
    until_status(&serve, 200, "provider back to LDAP");
    assert!(serve.log_text().contains("Identity Provider is LDAP again"));

    // The rows cannot be read: the last good settings stay, and it is said once.
    e.db.sql("RENAME TABLE identity_provider TO identity_provider_away");
    let said = "cannot read mailcow's Identity Provider settings again";
    let start = Instant::now();
    while !serve.log_text().contains(said) {
        assert!(start.elapsed() < IN_EFFECT, "{}", serve.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Several more refresh intervals: logins keep working, nothing more is said.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(serve.auth(USER, PASSWORD, "imap").status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        serve.log_text().matches(said).count(),
        1,
        "{}",
        serve.log_text()
    );
    e.db.sql("RENAME TABLE identity_provider_away TO identity_provider");
    let start = Instant::now();
    while !serve.log_text().contains("can be read again") {
        assert!(start.elapsed() < IN_EFFECT, "{}", serve.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    until_status(&serve, 200, "rows readable again");
}

/// mailcow's own LDAP sync (`crons/ldap-sync.php`) switched on in its UI: ours
/// refuses, naming the switches, and writes nothing; a dry run only warns; the
/// file's `alongside_mailcow_sync` lets it run anyway.
#[test]
fn sync_refuses_while_mailcows_own_sync_is_on() {
    let e = Env::new();
    ui_rows(&e);
    set_row(&e, "import_users", "1");
    let cfg = e.config_with("", "[sync]\nimport_users = true\n");
    let r = admin(&cfg, &["sync", "--force"], "");
    let all = format!("{}{}", r.stdout, r.stderr);
    assert_eq!(r.code, 1, "{all}");
    assert!(
        all.contains("\"Import Users\" or \"Periodic Full Sync\"")
            && all.contains("Identity Provider"),
        "the message should name mailcow's switches: {all}"
    );
    assert_eq!(e.count("mailbox"), 0, "a refused sync writes nothing");

    let r = admin(&cfg, &["sync", "--force", "--dry-run"], "");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("own LDAP sync is switched on"),
        "{}",
        r.stdout
    );
    assert_eq!(e.count("mailbox"), 0);

    // Periodic Full Sync alone counts too; both off: ours runs.
    set_row(&e, "import_users", "0");
    set_row(&e, "periodic_sync", "1");
    assert_eq!(admin(&cfg, &["sync", "--force"], "").code, 1);
    set_row(&e, "periodic_sync", "0");
    let r = admin(&cfg, &["sync", "--force"], "");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let created = e.count("mailbox");
    assert!(created > 0, "{}", r.stdout);

    // Switched on again, with the admin's say-so in the file: it runs.
    set_row(&e, "import_users", "1");
    let both = e.config_with(
        "",
        "[sync]\nimport_users = true\nperiodic_full_sync = true\nalongside_mailcow_sync = true\n",
    );
    let r = admin(&both, &["sync", "--force"], "");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}
