//! The admin's tools: `test USER` (one login, step by step) and
//! `connection-test` (every host, every layer), each line in plain words with
//! the fix for what failed.

use crate::auth::{self, Request};
use crate::config::{Config, Host, TlsMode};
use crate::directory::{explain, rc, user_filter, Directory, Trace};
use crate::mailcow::Store;
use crate::outcome::{Failure, RequestKind, Verdict};
use crate::provision;
use crate::secret::Secret;
use crate::tls;
use ldap3::{Scope, SearchEntry, SearchOptions};
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Instant;

/// Prints each step, indented, to stdout.
pub struct Printer;

impl Trace for Printer {
    fn step(&mut self, line: &str) {
        println!("  {line}");
    }
}

/// Read the password without echo, or the first line of stdin when stdin is
/// not a terminal. Never from the command line.
pub fn read_password(prompt: &str) -> std::io::Result<Secret> {
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password(prompt)?;
        return Ok(Secret::new(p));
    }
    // Straight from the descriptor (std's stdin buffer would keep a copy we
    // cannot zero), into buffers that are zeroed and never reallocate.
    const MAX: usize = 4096;
    let mut input = std::fs::File::open("/dev/stdin")?;
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(MAX));
    let mut chunk = zeroize::Zeroizing::new([0u8; 512]);
    while buf.len() < MAX && !buf.contains(&b'\n') {
        let want = (MAX - buf.len()).min(chunk.len());
        let n = input.read(&mut chunk[..want])?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "the password is not UTF-8")
    })?;
    Ok(Secret::new(text.to_owned()))
}

fn describe_config(cfg: &Config) {
    println!("config: {}", cfg.path.display());
    let l = &cfg.ldap;
    let hosts: Vec<String> = l.hosts.iter().map(Host::label).collect();
    println!("  hosts (in order): {}", hosts.join(", "));
    println!("  connection: {}", l.tls);
    if l.tls != TlsMode::Plain {
        if l.ignore_ssl_errors {
            println!("  certificate verification: OFF (ignore_ssl_errors = true) - anyone on the path can read passwords");
        } else {
            let cas: Vec<String> = l.ca_files.iter().map(|p| p.display().to_string()).collect();
            if l.ca_only {
                println!(
                    "  certificate verification: on, against {} only (ca_only)",
                    cas.join(", ")
                );
            } else {
                println!(
                    "  certificate verification: on, against the system roots{}",
                    if cas.is_empty() {
                        String::new()
                    } else {
                        format!(" and {}", cas.join(", "))
                    }
                );
            }
        }
    }
    println!(
        "  service account: {}",
        l.bind_dn.as_deref().unwrap_or("none (anonymous search)")
    );
}

/// `test USER`: run one login as checkpassword would, printing every step,
/// then the seed's troubleshooting checks.
pub fn test_user(cfg: &Config, login: &str, lookup_only: bool, dry_run: bool) -> ExitCode {
    describe_config(cfg);
    let (kind, password) = if lookup_only {
        (RequestKind::Lookup, None)
    } else {
        match read_password(&format!("password for {login}: ")) {
            Ok(p) => (RequestKind::Password, Some(p)),
            Err(e) => {
                println!("cannot read the password: {e}");
                return ExitCode::from(Verdict::Misuse.exit_code());
            }
        }
    };
    let req = Request {
        login: login.to_owned(),
        password,
        kind,
        service: std::env::var("SERVICE")
            .ok()
            .map(|s| s.to_ascii_lowercase()),
        remote_ip: None,
        dry_run,
    };
    println!(
        "login {login}{}:",
        if dry_run {
            " (dry run: nothing is written)"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let backend = crate::directory::Backend::OneShot(&cfg.state_dir);
    let decision = auth::decide(
        cfg,
        backend,
        &mut crate::db_slot::OneShot::new(cfg.database.as_ref(), None),
        &req,
        started + cfg.login_timeout,
        &mut Printer,
    );
    let ms = started.elapsed().as_millis();
    if let Some(entry) = &decision.entry {
        match &cfg.ldap.attribute_field {
            None => println!("  attribute field: not configured (ldap.attribute_field)"),
            Some(f) => {
                let values = entry.values(f);
                if values.is_empty() {
                    println!("  attribute field {f}: not present on the entry");
                } else {
                    println!("  attribute field {f}: {}", values.join(", "));
                }
            }
        }
    }
    if cfg.database.is_some() {
        troubleshoot(cfg, login, &decision);
    }
    let verdict = match &decision.result {
        Ok(acc) => {
            println!("RESULT: accepted as {} ({ms} ms)", acc.user);
            for (k, v) in acc.fields.pairs() {
                println!("  userdb {k}={v}");
            }
            Verdict::Accept
        }
        Err(f) => {
            let v = f.verdict(kind);
            println!("RESULT: {} - {f} ({ms} ms)", v.word());
            if let Failure::NoLogin(r, _) = f {
                println!(
                    "  Dovecot is told: nologin, reason=\"{}\" (checkpassword runs the reply program with them; Dovecot refuses the login and the client shows the text)",
                    cfg.messages.text(*r)
                );
            }
            if let Some(h) = failure_hint(f) {
                println!("  what to do: {h}");
            }
            v
        }
    };
    let code = match (verdict, kind) {
        (Verdict::Accept, RequestKind::Lookup) => 2,
        (v, _) => v.exit_code(),
    };
    println!("exit status as checkpassword: {code}");
    ExitCode::from(code)
}

/// The seed's four troubleshooting checks, each with a verdict line.
fn troubleshoot(cfg: &Config, login: &str, decision: &auth::Decision) {
    let Some(db) = &cfg.database else { return };
    println!("troubleshooting:");
    let mut c = Checklist { ok: true };
    let mut store = match Store::connect(db, Instant::now() + cfg.login_timeout) {
        Ok(s) => s,
        Err(f) => {
            c.fail(
                &format!("database: {f}"),
                "check the [database] section and that MariaDB is reachable",
            );
            return;
        }
    };
    // 4. The LDAP filter lets the user through.
    let entry = match &decision.entry {
        Some(e) => {
            c.pass("LDAP filter: the user's entry passes the filter");
            e.clone()
        }
        None => {
            filter_check(cfg, login, &mut c);
            return;
        }
    };
    // 1. The user's mail domain exists (and is active).
    let address = match provision::canonical_address(cfg, &entry, login) {
        Ok(a) => a,
        Err(f) => {
            c.fail(
                &format!("mailbox address: {f}"),
                "set provisioning.mail_field to the attribute holding the address",
            );
            return;
        }
    };
    let domain_name = address
        .rsplit_once('@')
        .map(|(_, d)| d.to_owned())
        .unwrap_or_default();
    let domain = match store.domain(&domain_name) {
        Ok(d) => d,
        Err(f) => return c.fail(&format!("database: {f}"), "check the database"),
    };
    match &domain {
        None => c.fail(
            &format!("mail domain {domain_name}: does not exist in mailcow"),
            "add the domain in mailcow (E-Mail > Configuration > Domains)",
        ),
        Some(d) if !d.active => c.fail(
            &format!("mail domain {domain_name}: inactive"),
            "activate the domain in mailcow",
        ),
        Some(_) => c.pass(&format!("mail domain {domain_name}: exists and is active")),
    }
    // 3. An attribute mapping matches.
    let field = cfg
        .ldap
        .attribute_field
        .as_deref()
        .unwrap_or("(ldap.attribute_field not set)");
    let values = cfg
        .ldap
        .attribute_field
        .as_deref()
        .map(|f| entry.values(f).join(", "))
        .unwrap_or_default();
    let template = auth::choose_template(cfg, &entry);
    match template {
        Some((t, Some(v))) => c.pass(&format!("attribute mapping: {field} = [{values}]: \"{v}\" maps to template \"{t}\"")),
        Some((t, None)) => c.pass(&format!("attribute mapping: {field} = [{values}]: no mapping matched, default template \"{t}\"")),
        None => c.fail(
            &format!("attribute mapping: {field} = [{values}]: no mapping matches and no default_template"),
            "add an [[attribute_mapping]] for one of these values, or set provisioning.default_template",
        ),
    }
    if let Some((t, _)) = template {
        match store.template(t) {
            Ok(Some(_)) => {}
            Ok(None) => c.fail(
                &format!("template \"{t}\" does not exist in mailcow"),
                "create it in mailcow, or fix the mapping",
            ),
            Err(f) => c.fail(&format!("database: {f}"), "check the database"),
        }
    }
    // 2. "Max. possible mailboxes" and "Domain quota" leave room.
    match store.mailbox(&address) {
        Ok(Some(row)) => c.note(&format!(
            "mailbox {address} exists (authsource {}, active {}, quota {} MiB): domain limits apply to new mailboxes only",
            row.authsource,
            row.active,
            row.quota / provision::MIB
        )),
        Ok(None) => {
            let tq = template
                .and_then(|(t, _)| store.template(t).ok().flatten())
                .map(|t| provision::template_quota(&t))
                .unwrap_or(0);
            match provision::check_domain_room(&domain_name, tq, domain.as_ref()) {
                Ok(q) => c.pass(&format!(
                    "domain limits: room for a new mailbox of {} ({} of {} mailboxes used)",
                    match q {
                        0 => "unlimited quota".to_owned(),
                        q => format!("{} MiB", q / provision::MIB),
                    },
                    domain.as_ref().map(|d| d.mailbox_count).unwrap_or(0),
                    domain.as_ref().map(|d| d.max_mailboxes).unwrap_or(0)
                )),
                Err(f) => c.fail(
                    &format!("domain limits: {f}"),
                    "raise the domain's \"Max. possible mailboxes\" or \"Domain quota\" in mailcow, or lower the template's quota",
                ),
            }
        }
        Err(f) => c.fail(&format!("database: {f}"), "check the database"),
    }
}

/// When no entry was found: is it the filter that keeps the user out?
fn filter_check(cfg: &Config, login: &str, c: &mut Checklist) {
    if matches!(
        cfg.ldap.filter,
        crate::config::FilterTemplate::And { extra: None }
    ) {
        c.fail(
            "LDAP filter: no filter set, and no entry has this login",
            "check ldap.username_field and ldap.base_dn",
        );
        return;
    }
    let mut plain = cfg.ldap.clone();
    plain.filter = crate::config::FilterTemplate::And { extra: None };
    let mut dir = Directory::new(&plain, &cfg.state_dir, Instant::now() + cfg.login_timeout);
    let attrs = [plain.username_field.as_str()];
    match dir.find_user(login, None, &attrs, &mut crate::directory::Silent) {
        Ok(found) => c.fail(
            &format!(
                "LDAP filter: {} has this login but does not pass ldap.filter \"{}\"",
                found.entry.dn, cfg.ldap.filter_text
            ),
            "widen ldap.filter if this user should log in",
        ),
        Err(_) => c.fail(
            &format!(
                "LDAP filter: no entry has {}={login}, with or without the filter",
                cfg.ldap.username_field
            ),
            "check ldap.username_field and ldap.base_dn",
        ),
    }
}

fn failure_hint(f: &Failure) -> Option<&'static str> {
    match f {
        Failure::UnknownUser => Some("no entry matched: check ldap.base_dn, ldap.username_field and ldap.filter, and that the service account may read the entry"),
        Failure::Ambiguous(_) => Some("make the filter or username_field match one entry per login"),
        Failure::WrongPassword => Some("the directory refused this password for the DN found"),
        Failure::BadRequest(_) => Some("a login and a non-empty password are required"),
        Failure::Temporary(_) => Some("run `mailcow-ldap-auth connection-test` to check every host"),
        Failure::Denied(r) | Failure::NoLogin(_, r) if r.contains("Active Directory: data") => {
            Some(ad_hint(r))
        }
        Failure::NoLogin(..) => Some("the password is right; the user is told the reason ([messages]); an empty text there turns it into the plain refusal"),
        Failure::NotOurs(_) => Some("this mailbox logs in through mailcow's own passdb (its Identity Provider), never through LDAP"),
        Failure::Denied(_) | Failure::Misuse(_) => None,
    }
}

/// What an admin does about an Active Directory refusal.
fn ad_hint(reason: &str) -> &'static str {
    if reason.contains("locked out") {
        "the account is locked out after too many wrong passwords: unlock it in Active Directory, or wait for the lockout duration"
    } else if reason.contains("disabled") {
        "the account is disabled in Active Directory; a filter with (!(userAccountControl:1.2.840.113556.1.4.803:=2)) keeps disabled accounts out before the bind"
    } else if reason.contains("expired") || reason.contains("must change") {
        "the password or account has expired or must be changed: the user (or an admin) sets a new one in Active Directory"
    } else {
        "Active Directory refused this account for the reason named: see the account's settings there"
    }
}

/// Counts a step as passed or failed, and prints it.
struct Checklist {
    ok: bool,
}

impl Checklist {
    fn pass(&mut self, what: &str) {
        println!("  [ ok ] {what}");
    }
    fn fail(&mut self, what: &str, fix: &str) {
        self.ok = false;
        println!("  [FAIL] {what}");
        println!("         fix: {fix}");
    }
    fn note(&mut self, what: &str) {
        println!("  [info] {what}");
    }
}

/// `connection-test`: every host, every layer. Exit 0 when one host passes all.
pub fn connection_test(cfg: &Config) -> ExitCode {
    describe_config(cfg);
    if cfg.ldap.tls != TlsMode::Plain && !cfg.ldap.ignore_ssl_errors {
        match tls::client_config(&cfg.ldap.ca_files, cfg.ldap.ca_only, true) {
            Ok((_, s)) => {
                println!("  trust store: {} system roots", s.system_roots);
                for (f, n) in s.ca_file_certs {
                    println!("  trust store: {n} certificate(s) from {}", f.display());
                }
            }
            Err(e) => println!("  trust store: ERROR {e}"),
        }
    }
    let mut good_hosts = 0;
    for host in &cfg.ldap.hosts {
        println!("host {}:", host.label());
        if check_host(cfg, host) {
            good_hosts += 1;
        }
    }
    if cfg.database.is_some() && !check_database(cfg) {
        println!(
            "RESULT: the database check failed: logins will fail with a temporary error (111)"
        );
        return ExitCode::from(1);
    }
    if good_hosts > 0 {
        println!(
            "RESULT: {good_hosts} of {} host(s) passed every check",
            cfg.ldap.hosts.len()
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "RESULT: no host passed every check: logins will fail with a temporary error (111)"
        );
        ExitCode::from(1)
    }
}

fn check_host(cfg: &Config, host: &Host) -> bool {
    let mut c = Checklist { ok: true };
    let l = &cfg.ldap;
    // Name resolution.
    let addrs: Vec<_> = match (host.name.as_str(), host.port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            c.fail(
                &format!("resolve {}: {e}", host.name),
                "check the spelling in ldap.hosts and the DNS resolver",
            );
            return false;
        }
    };
    let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    c.pass(&format!("resolve {}: {}", host.name, shown.join(", ")));
    // TCP.
    let mut tcp_ok = false;
    for a in &addrs {
        let t = Instant::now();
        match TcpStream::connect_timeout(a, l.connect_timeout) {
            Ok(_) => {
                c.pass(&format!("TCP connect {a}: {} ms", t.elapsed().as_millis()));
                tcp_ok = true;
                break;
            }
            Err(e) => c.fail(&format!("TCP connect {a}: {e}"), explain(&e.into()).hint),
        }
    }
    if !tcp_ok {
        return false;
    }
    // LDAP (and TLS) session.
    let deadline = Instant::now() + cfg.login_timeout;
    let mut dir = Directory::new(l, &cfg.state_dir, deadline);
    let mut conn = match dir.connect(host) {
        Ok(conn) => conn,
        Err(crate::directory::Attempt::NextHost(hf)) => {
            let presented = if l.tls != TlsMode::Plain && !l.ignore_ssl_errors {
                unverified_certificate(cfg, host)
            } else {
                None
            };
            let lower = hf.reason.to_ascii_lowercase();
            match presented.as_deref().and_then(tls::CertNames::of) {
                Some(names)
                    if lower.contains("notvalidforname") || lower.contains("not valid for") =>
                {
                    c.fail(
                        &format!("{}: {}", l.tls, hf.reason),
                        &format!(
                            "the certificate does not name {}: it carries {}; put one of these names in ldap.hosts",
                            host.name,
                            names.shown()
                        ),
                    )
                }
                _ => c.fail(&format!("{}: {}", l.tls, hf.reason), hf.hint),
            }
            if let Some(der) = presented {
                c.note(&format!(
                    "the server presents: {}",
                    tls::describe_certificate(&der)
                ));
            }
            return false;
        }
        Err(crate::directory::Attempt::Final(f)) => {
            c.fail(&format!("{}: {f}", l.tls), "see the message");
            return false;
        }
    };
    match l.tls {
        TlsMode::Plain => c.note(
            "plain LDAP: passwords cross the network unencrypted; consider use_tls or use_ssl",
        ),
        _ => {
            let cert = conn.get_peer_certificate().ok().flatten();
            let what = cert
                .as_deref()
                .map(tls::describe_certificate)
                .unwrap_or_else(|| "no certificate".into());
            let (verified, matched) = if l.ignore_ssl_errors {
                ("NOT verified (ignore_ssl_errors)", String::new())
            } else {
                let matched = cert
                    .as_deref()
                    .map(|der| format!("; {}", tls::name_match(der, &host.name)))
                    .unwrap_or_default();
                ("verified", matched)
            };
            c.pass(&format!(
                "{} handshake, certificate {verified}: {what}{matched}",
                l.tls
            ));
        }
    }
    // Service bind.
    match dir.service_bind(&mut conn) {
        Ok(()) => c.pass(&match &l.bind_dn {
            Some(dn) => format!("service bind as {dn}"),
            None => "anonymous (no bind_dn)".to_owned(),
        }),
        Err(crate::directory::Attempt::NextHost(hf)) => {
            c.fail(&format!("service bind: {}", hf.reason), hf.hint);
            return false;
        }
        Err(crate::directory::Attempt::Final(f)) => {
            let text = f.to_string();
            let fix = if text.contains("encryption required") {
                "use ldap.use_tls (StartTLS) or ldap.use_ssl (LDAPS); the bind DN and password are not the problem"
            } else {
                "check ldap.bind_dn and ldap.bind_password (or bind_password_file); each failed attempt counts against the service account's lockout threshold on Active Directory, so fix it before retrying"
            };
            c.fail(&format!("service bind: {f}"), fix);
            return false;
        }
    }
    // Base DN readable.
    let res = conn.with_timeout(l.timeout).search(
        &l.base_dn,
        Scope::Base,
        "(objectClass=*)",
        vec!["1.1"],
    );
    match res {
        Ok(r) if r.1.rc == rc::SUCCESS && !r.0.is_empty() => {
            c.pass(&format!("base DN \"{}\" readable", l.base_dn))
        }
        Ok(r) => c.fail(
            &format!(
                "base DN \"{}\": result code {} {}",
                l.base_dn, r.1.rc, r.1.text
            ),
            "check ldap.base_dn, and that the service account may read it",
        ),
        Err(e) => {
            let hf = explain(&e);
            c.fail(&format!("base DN: {}", hf.reason), hf.hint);
        }
    }
    // How many entries the filter lets through (bounded).
    const LIMIT: i32 = 1000;
    let filter = user_filter(&l.filter, &l.username_field, "*").replace("\\2a", "*");
    let mut attrs = vec![l.username_field.as_str()];
    if let Some(f) = &l.attribute_field {
        attrs.push(f);
    }
    let res = conn
        .with_timeout(l.timeout)
        .with_search_options(SearchOptions::new().sizelimit(LIMIT))
        .search(&l.base_dn, Scope::Subtree, &filter, attrs);
    match res {
        Ok(r) if r.1.rc == rc::SUCCESS || r.1.rc == rc::SIZE_LIMIT_EXCEEDED => {
            let entries: Vec<SearchEntry> =
                r.0.into_iter()
                    .filter(|e| !e.is_ref())
                    .map(SearchEntry::construct)
                    .collect();
            let n = entries.len();
            let more = if r.1.rc == rc::SIZE_LIMIT_EXCEEDED {
                " or more (size limit reached)"
            } else {
                ""
            };
            if n == 0 {
                c.fail(
                    &format!("filter {filter}: no entries"),
                    "no user could log in: check ldap.base_dn, ldap.username_field and ldap.filter",
                );
            } else if r.1.rc == rc::SIZE_LIMIT_EXCEEDED && n < LIMIT as usize {
                // Not our limit: the server's. Sync's paged search stops there too.
                c.fail(
                    &format!("filter {filter}: {n} entries, then the server's size limit"),
                    &crate::sync::size_limit_advice(l.bind_dn.as_deref(), n),
                );
            } else {
                c.pass(&format!("filter {filter}: {n}{more} entries"));
                if let Some(f) = &l.attribute_field {
                    let with = entries
                        .iter()
                        .filter(|e| e.attrs.keys().any(|k| k.eq_ignore_ascii_case(f)))
                        .count();
                    if with == 0 {
                        c.note(&format!(
                            "attribute field {f}: on none of them - only default_template can provision"
                        ));
                    } else {
                        c.pass(&format!("attribute field {f}: present on {with} of {n}"));
                    }
                }
            }
        }
        Ok(r) => c.fail(
            &format!("filter {filter}: result code {} {}", r.1.rc, r.1.text),
            "check ldap.filter and the service account's rights",
        ),
        Err(e) => {
            let hf = explain(&e);
            c.fail(&format!("filter search: {}", hf.reason), hf.hint);
        }
    }
    let _ = conn.unbind();
    c.ok
}

/// The database: connection, and every template the configuration names.
fn check_database(cfg: &Config) -> bool {
    let Some(db) = &cfg.database else { return true };
    println!("database:");
    let mut c = Checklist { ok: true };
    let mut store = match Store::connect(db, Instant::now() + cfg.login_timeout) {
        Ok(s) => {
            c.pass(&format!(
                "connected to {} as {}{}",
                db_label(db),
                db.user,
                if db.tls { " over TLS (verified)" } else { "" }
            ));
            s
        }
        Err(f) => {
            c.fail(&f.to_string(), "check the [database] section, that MariaDB runs and accepts this user from this host");
            return false;
        }
    };
    let names = match store.template_names() {
        Ok(n) => n,
        Err(f) => {
            c.fail(
                &f.to_string(),
                "is this mailcow's database? (database.name)",
            );
            return false;
        }
    };
    c.note(&format!(
        "mailbox templates in mailcow: {}",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    ));
    let named = cfg
        .mappings
        .iter()
        .map(|m| {
            (
                format!("attribute_mapping \"{}\"", m.attribute),
                m.template.as_str(),
            )
        })
        .chain(
            cfg.provisioning
                .default_template
                .as_deref()
                .map(|t| ("default_template".to_owned(), t)),
        );
    for (what, template) in named {
        if names.iter().any(|n| n == template) {
            c.pass(&format!("{what} -> template \"{template}\" exists"));
        } else {
            c.fail(
                &format!("{what} -> template \"{template}\" does not exist"),
                "create the mailbox template in mailcow (E-Mail > Configuration > Templates) or fix the name",
            );
        }
    }
    if cfg.mappings.is_empty() && cfg.provisioning.default_template.is_none() {
        c.note("no attribute_mapping and no default_template: existing mailboxes can log in, none is created");
    }
    c.ok
}

fn db_label(db: &crate::config::DatabaseConfig) -> String {
    match &db.address {
        crate::config::DbAddress::Tcp { host, port } => format!("{host}:{port}/{}", db.name),
        crate::config::DbAddress::Socket(p) => format!("{}/{}", p.display(), db.name),
    }
}

/// After a verification failure, the certificate the server presents, so the
/// admin can see which CA signed it and which names it carries.
fn unverified_certificate(cfg: &Config, host: &Host) -> Option<Vec<u8>> {
    let mut l = cfg.ldap.clone();
    l.ignore_ssl_errors = true;
    let mut dir = Directory::new(&l, &cfg.state_dir, Instant::now() + cfg.login_timeout);
    let mut conn = dir.connect(host).ok()?;
    let der = conn.get_peer_certificate().ok().flatten();
    let _ = conn.unbind();
    der
}

/// Flush stdout (used before exec or exit).
pub fn flush() {
    let _ = std::io::stdout().flush();
}
