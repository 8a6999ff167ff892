//! User binds against a real slapd, counted per connection in its stats log:
//! `serve`'s pool of bind-only connections, the DN cache, and the equal-time
//! bind that keeps an unknown user's answer from telling that the address
//! does not exist (in `serve` and in `checkpassword`).

use crate::support::serve::Serve;
use crate::support::slapd::{ConnOps, BASE};
use crate::support::{checkpassword, creds, write_config, Slapd, StubReply};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const JDOE_DN: &str = "uid=jdoe,ou=people,dc=example,dc=org";

fn start_serve(dir: &Path, slapd: &Slapd, serve_extra: &str) -> Serve {
    let (section, port, socket) = Serve::section(dir, serve_extra);
    let text = format!(
        "state_dir = \"{}\"\nlog_target = \"stderr\"\n{}\n[dovecot]\nuid = \"5000\"\ngid = \"5000\"\n{section}",
        dir.display(),
        slapd.ldap_section()
    );
    let cfg: PathBuf = write_config(dir, "serve.toml", &text);
    Serve::start(&cfg, port, socket)
}

/// The connections that carried a user bind.
fn bind_conns(slapd: &Slapd) -> Vec<(u64, ConnOps)> {
    slapd
        .connections()
        .into_iter()
        .filter(|(_, c)| c.user_binds > 0)
        .collect()
}

/// The connections that carried a search.
fn search_conns(slapd: &Slapd) -> Vec<(u64, ConnOps)> {
    slapd
        .connections()
        .into_iter()
        .filter(|(_, c)| c.searches > 0)
        .collect()
}

/// Wait (polling slapd's log, at most 10 s) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "not within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `now()` once it equals `want` (slapd logs an operation's result just
/// after sending it, so a count may lag the answer by a moment; at most 10 s).
fn settled<T: PartialEq + std::fmt::Debug>(what: &str, want: T, now: impl Fn() -> T) -> T {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let v = now();
        if v == want || Instant::now() > end {
            assert_eq!(v, want, "{what}");
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// 30 logins (right, wrong, another user) one after the other: the user
/// binds share one or two warm connections (the old code opened one per
/// login: 30), and no connection that carried a user bind ever searched or
/// bound as the service account.
#[test]
fn user_binds_reuse_warm_connections_that_never_search() {
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start_counting(dir.path());
    let serve = start_serve(dir.path(), &slapd, "");
    for i in 0..10 {
        assert_eq!(
            serve.auth("jdoe@example.org", "secret1", "imap").status,
            200
        );
        assert_eq!(
            serve
                .auth("jdoe@example.org", &format!("Wr0ng-{i}"), "imap")
                .status,
            401
        );
        assert_eq!(
            serve.sasl(
                "hans.mueller@example.org",
                crate::support::slapd::HMUELLER_PW,
                "smtp",
                ""
            ),
            Some("OK".into())
        );
    }
    settled("30 user binds logged", 30, || {
        bind_conns(&slapd)
            .iter()
            .map(|(_, c)| c.user_binds)
            .sum::<usize>()
    });
    let conns = bind_conns(&slapd);
    for (id, c) in &conns {
        assert_eq!(
            (c.searches, c.service_binds),
            (0, 0),
            "conn={id} carried a user bind and also searched or bound as the service: {c:?}"
        );
    }
    // Sequential logins need one; a bound of 3 leaves room for a reconnect.
    assert!(
        conns.len() <= 3,
        "30 user binds took {} connections: {conns:?}",
        conns.len()
    );
    // And the searches stayed on service-bound connections.
    let searching = search_conns(&slapd);
    assert!(
        searching.iter().all(|(_, c)| c.service_binds > 0),
        "{searching:?}"
    );
}

/// A warm connection is retired after `MAX_OPS_PER_CONNECTION` operations
/// (ldap3 keeps every completed search's message id for the connection's
/// life: the old code's one search connection grew by an id per login,
/// 8.5 MB over the 10-minute soak). 2 × the limit + 10 sequential logins:
/// three search connections, three bind connections, none beyond the limit,
/// and every login answered.
#[test]
fn warm_connections_are_retired_after_a_bounded_number_of_operations() {
    use mailcow_ldap_auth::directory::MAX_OPS_PER_CONNECTION;
    let max = MAX_OPS_PER_CONNECTION as usize;
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start_counting(dir.path());
    let serve = start_serve(dir.path(), &slapd, "");
    let n = 2 * max + 10;
    for i in 0..n {
        let status = serve.auth("jdoe@example.org", "secret1", "imap").status;
        assert_eq!(status, 200, "login {i}");
    }
    settled("every user bind logged", n, || {
        bind_conns(&slapd)
            .iter()
            .map(|(_, c)| c.user_binds)
            .sum::<usize>()
    });
    let searching = search_conns(&slapd);
    assert_eq!(
        searching.iter().map(|(_, c)| c.searches).sum::<usize>(),
        n,
        "{searching:?}"
    );
    for (id, c) in searching.iter().chain(bind_conns(&slapd).iter()) {
        assert!(
            c.searches <= max && c.user_binds <= max,
            "conn={id} carried more than {max} operations: {c:?}"
        );
    }
    assert_eq!(searching.len(), 3, "search connections: {searching:?}");
    assert_eq!(bind_conns(&slapd).len(), 3, "bind connections");
}

/// slapd cuts a bind connection (a bind request larger than its
/// `sockbuf_max_incoming`): that connection is not used again, the login is a
/// temporary failure as before, and the next login binds on a new warm
/// connection, which then stays open (the old code closed every one).
#[test]
fn a_connection_cut_during_a_bind_is_dropped() {
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start_counting_global(
        dir.path(),
        "sockbuf_max_incoming 2048\nsockbuf_max_incoming_auth 2048",
    );
    let serve = start_serve(dir.path(), &slapd, "");
    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "imap").status,
        200
    );
    settled("one bind connection", 1, || bind_conns(&slapd).len());
    let first = bind_conns(&slapd);
    let first_id = first[0].0;

    let huge = "x".repeat(4000);
    let r = serve.auth("jdoe@example.org", &huge, "imap");
    assert_eq!(
        r.status, 503,
        "a cut connection is an outage, never a wrong password: {r:?}"
    );
    eventually("slapd logs the first bind connection as closed", || {
        slapd.connections()[&first_id].closed
    });

    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "imap").status,
        200
    );
    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "imap").status,
        200
    );
    settled(
        "three user binds in all (slapd cut the huge one before reading it)",
        3,
        || {
            bind_conns(&slapd)
                .iter()
                .map(|(_, c)| c.user_binds)
                .sum::<usize>()
        },
    );
    let after = bind_conns(&slapd);
    let fresh: Vec<_> = after.iter().filter(|(id, _)| *id != first_id).collect();
    assert_eq!(
        fresh.len(),
        1,
        "one new bind connection for both logins: {after:?}"
    );
    assert_eq!(fresh[0].1.user_binds, 2, "{after:?}");
    assert!(
        !fresh[0].1.closed,
        "the healthy bind connection stays warm: {after:?}"
    );
}

/// With `dn_cache_seconds`, a second login binds without a search; after a
/// rename (modrdn) the cached DN is refused, the login searches once more and
/// binds once more as the new DN; a wrong password then makes one failed bind
/// and one search, never a second bind as the same DN.
#[test]
fn dn_cache_follows_a_renamed_user_with_one_search_and_one_bind() {
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start_counting(dir.path());
    let serve = start_serve(dir.path(), &slapd, "dn_cache_seconds = 300");
    let searches = || slapd.searches_for("jdoe@example.org");
    let binds = || slapd.user_bind_results();

    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "imap").status,
        200
    );
    settled("first login: a search and a bind", (1, 1), || {
        (searches(), binds().len())
    });
    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "imap").status,
        200
    );
    settled(
        "the second login binds the cached DN without a search",
        (1, 2),
        || (searches(), binds().len()),
    );

    slapd.modify(&format!(
        "dn: {JDOE_DN}\nchangetype: modrdn\nnewrdn: uid=jdoe2\ndeleteoldrdn: 1\n"
    ));
    let new_dn = format!("uid=jdoe2,ou=people,{BASE}");
    let r = serve.auth("jdoe@example.org", "secret1", "imap");
    assert_eq!(r.status, 200, "{r:?}");
    let b = settled(
        "after the rename: the old DN refused, one search, one bind as the new DN",
        (2, vec![(JDOE_DN.to_owned(), 49), (new_dn.clone(), 0)]),
        || (searches(), binds().get(2..).unwrap_or_default().to_vec()),
    );
    assert_eq!(b.0, 2);

    let r = serve.auth("jdoe@example.org", "Wr0ng-pw", "imap");
    assert_eq!(r.status, 401, "{r:?}");
    settled(
        "a wrong password: one failed bind, one search, no second bind as the same DN",
        (3, vec![(new_dn.clone(), 49)]),
        || (searches(), binds().get(4..).unwrap_or_default().to_vec()),
    );
    assert_eq!(
        serve.auth("jdoe@example.org", "secret1", "imap").status,
        200
    );
    settled("the new DN is cached", (3, 6), || {
        (searches(), binds().len())
    });
}

/// An unknown user costs the directory one bind, as a wrong password does:
/// a bind as a DN that cannot exist (refused: 49), never as a real entry.
/// Over 300 interleaved pairs, the median answer times of the two differ by
/// at most 0.25 ms + 25 % of the wrong password's (the old code answered an
/// unknown user after its search alone: it took about half as long).
#[test]
fn an_unknown_user_takes_as_long_as_a_wrong_password_in_serve() {
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start_counting(dir.path());
    let serve = start_serve(dir.path(), &slapd, "");
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..300 {
        let t = Instant::now();
        let r = serve.sasl(&format!("nobody{i}@example.org"), "guess-1", "smtp", "");
        unknown.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(r.unwrap().starts_with("NO"));
        let t = Instant::now();
        let r = serve.sasl("jdoe@example.org", "guess-1", "smtp", "");
        wrong.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(r.unwrap().starts_with("NO"));
    }
    let (mu, mw) = (median(&mut unknown), median(&mut wrong));
    eprintln!("median answer: unknown user {mu:.3} ms, wrong password {mw:.3} ms");
    assert!(
        (mu - mw).abs() <= 0.25 + 0.25 * mw,
        "median answer: unknown user {mu:.3} ms, wrong password {mw:.3} ms"
    );
    // 600 user binds: 300 as the dummy DN, 300 as jdoe.
    settled("600 user binds", 600, || slapd.user_bind_results().len());
    assert_eq!(
        serve.sasl("nobody@example.org", "guess-1", "smtp", ""),
        Some("NO authentication failed".into())
    );
    let b = settled("one more user bind", 601, || {
        slapd.user_bind_results().len()
    });
    let b = &slapd.user_bind_results()[b - 1..];
    let (dn, code) = &b[0];
    assert!(
        dn.starts_with("cn=no-such-entry-") && dn.ends_with(BASE) && *code == 49,
        "{b:?}"
    );
}

/// checkpassword, one process per login: an unknown user's search is
/// followed by the same bind on the same connection a wrong password gets,
/// as a DN that cannot exist.
#[test]
fn an_unknown_user_binds_once_in_checkpassword() {
    let dir = TempDir::new().unwrap();
    let slapd = Slapd::start_counting(dir.path());
    let cfg = write_config(
        dir.path(),
        "cp.toml",
        &format!(
            "state_dir = \"{}\"\nlog_target = \"stderr\"\n{}",
            dir.path().display(),
            slapd.ldap_section()
        ),
    );
    let reply = StubReply::create(dir.path());
    let run = checkpassword(&cfg, &creds("nobody@example.org", "guess-1"), &[], &reply);
    assert_eq!(run.code, 1, "unknown user: {}", run.stderr);
    let run = checkpassword(&cfg, &creds("jdoe@example.org", "guess-1"), &[], &reply);
    assert_eq!(run.code, 1, "wrong password: {}", run.stderr);
    settled("two user binds", 2, || slapd.user_bind_results().len());
    let b = slapd.user_bind_results();
    assert!(
        b[0].0.starts_with("cn=no-such-entry-") && b[0].1 == 49,
        "{b:?}"
    );
    assert_eq!(b[1], (JDOE_DN.to_owned(), 49));
    // Both on the login's own connection, after its search.
    let conns: Vec<_> = slapd
        .connections()
        .into_values()
        .filter(|c| c.user_binds > 0)
        .collect();
    assert!(
        conns.iter().all(|c| c.searches == 1 && c.user_binds == 1),
        "{conns:?}"
    );
}
