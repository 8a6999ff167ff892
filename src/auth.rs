//! The decision for one login or lookup, shared by every front end
//! (`checkpassword`, `test`). It returns either the accepted user with its
//! userdb fields or a [`Failure`]; [`Failure::verdict`] turns that into an
//! exit status.

use crate::config::{Config, Retire};
use crate::db_slot::StoreSource;
use crate::directory::{Backend, Directory, Found, Trace, UserEntry};
use crate::health::unix_now;
use crate::log;
use crate::mailcow::{
    Created, LoginMailbox, MailboxRow, Presence, Store, Template, DEACTIVATED_BY_SYNC,
    MISSING_SINCE, RETIRED_BY_VALUE,
};
use crate::outcome::{Failure, Reason, RequestKind, Verdict};
use crate::passhash;
use crate::provision;
use crate::provision::NewMailbox;
use crate::secret::Secret;
use std::time::Instant;

/// Longest login accepted (Dovecot sends at most 512 bytes for login and password together).
pub const MAX_LOGIN_LEN: usize = 256;

/// One request, as received from Dovecot or the admin.
#[derive(Debug)]
pub struct Request {
    pub login: String,
    /// `None` for a lookup.
    pub password: Option<Secret>,
    pub kind: RequestKind,
    /// Dovecot's `SERVICE` (imap, pop3, sieve, smtp, ...), lower-cased.
    pub service: Option<String>,
    pub remote_ip: Option<String>,
    /// Decide as usual but write nothing to the database (`test --dry-run`).
    pub dry_run: bool,
}

/// The userdb fields handed back to Dovecot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFields {
    pub uid: String,
    pub gid: String,
    pub home: String,
    /// Mailbox quota in bytes; `None` or 0 means no quota rule.
    pub quota_bytes: Option<u64>,
}

impl UserFields {
    /// `(name, value)` pairs with Dovecot's userdb field names.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("uid", self.uid.clone()),
            ("gid", self.gid.clone()),
            ("home", self.home.clone()),
        ];
        if let Some(q) = self.quota_bytes.filter(|&q| q > 0) {
            v.push(("quota_rule", format!("*:bytes={q}")));
        }
        v
    }
}

/// An accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The canonical login Dovecot should use from now on.
    pub user: String,
    pub fields: UserFields,
}

/// The result of [`decide`], with what the log line needs.
#[derive(Debug)]
pub struct Decision {
    pub result: Result<Accepted, Failure>,
    /// The directory host that answered, if any.
    pub host: Option<String>,
    /// The user's entry, when the directory found one.
    pub entry: Option<UserEntry>,
}

/// Check the login's shape before anything is sent to a server.
pub fn validate_login(login: &str) -> Result<(), Failure> {
    if login.is_empty() {
        return Err(Failure::BadRequest("empty login".into()));
    }
    if login.len() > MAX_LOGIN_LEN {
        return Err(Failure::BadRequest(format!(
            "login longer than {MAX_LOGIN_LEN} bytes"
        )));
    }
    if login.chars().any(|c| c.is_control()) {
        return Err(Failure::BadRequest("control character in login".into()));
    }
    if login.trim() != login {
        return Err(Failure::BadRequest(
            "login starts or ends with a space".into(),
        ));
    }
    Ok(())
}

/// Expand `%u` (user), `%n` (local part), `%d` (domain) and `%%` in a home template.
pub fn expand_home(template: &str, user: &str) -> String {
    let (local, domain) = user.split_once('@').unwrap_or((user, ""));
    let mut out = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(user),
            Some('n') => out.push_str(local),
            Some('d') => out.push_str(domain),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// The attributes read from a user's entry.
pub fn wanted_attributes(cfg: &Config) -> Vec<&str> {
    let mut a = vec![cfg.ldap.username_field.as_str(), "displayName", "cn"];
    a.extend(cfg.alias_attributes.iter().map(String::as_str));
    if let Some(f) = &cfg.ldap.attribute_field {
        a.push(f);
    }
    if let Some(f) = &cfg.provisioning.mail_field {
        a.push(f);
    }
    a
}

/// What one decision's log line says.
pub struct LogLine<'a> {
    pub kind: RequestKind,
    pub login: &'a str,
    pub service: Option<&'a str>,
    pub remote_ip: Option<&'a str>,
    pub result: &'a Result<Accepted, Failure>,
    pub host: Option<&'a str>,
    pub started: Instant,
    /// The front end, when not checkpassword (`http`, `saslauthd`).
    pub via: Option<&'a str>,
}

/// Log one decision (one line, never a password) and return its verdict.
pub fn log_decision(l: &LogLine) -> Verdict {
    let (verdict, reason) = match l.result {
        Ok(_) => (Verdict::Accept, String::new()),
        Err(f) => (f.verdict(l.kind), f.to_string()),
    };
    let line = format!(
        "{} user=\"{}\" service={} rip={} result={} reason=\"{}\" host={} ms={}{}",
        if l.kind == RequestKind::Lookup {
            "lookup"
        } else {
            "login"
        },
        log::clean(l.login),
        log::clean(l.service.unwrap_or("-")),
        log::clean(l.remote_ip.unwrap_or("-")),
        verdict.word(),
        log::clean(&reason),
        l.host.unwrap_or("-"),
        l.started.elapsed().as_millis(),
        l.via.map(|v| format!(" via={v}")).unwrap_or_default(),
    );
    match verdict {
        Verdict::Accept | Verdict::Reject | Verdict::Unknown => log::info(&line),
        Verdict::Temporary | Verdict::Misuse => log::error(&line),
    }
    verdict
}

/// The first mapping, in configured order, whose value equals any value of
/// the attribute field.
fn first_mapping<'a>(cfg: &'a Config, entry: &UserEntry) -> Option<&'a crate::config::Mapping> {
    let field = cfg.ldap.attribute_field.as_ref()?;
    let values = entry.values(field);
    cfg.mappings
        .iter()
        .find(|m| values.iter().any(|v| v == &m.attribute))
}

/// The template for an entry: the first mapping, in configured order, whose
/// value equals any value of the attribute field; else the default template.
/// Returns the template and the value that selected it (`None` for the default).
/// `None` also when that first mapping retires the mailbox ([`retiring`]).
pub fn choose_template<'a>(
    cfg: &'a Config,
    entry: &UserEntry,
) -> Option<(&'a str, Option<&'a str>)> {
    match first_mapping(cfg, entry) {
        Some(m) if m.action.is_some() => None,
        Some(m) => Some((m.template.as_str(), Some(m.attribute.as_str()))),
        None => cfg
            .provisioning
            .default_template
            .as_deref()
            .map(|t| (t, None)),
    }
}

/// The retiring action of an entry (`action =` on its first matching
/// mapping) and the value that selected it.
pub fn retiring<'a>(cfg: &'a Config, entry: &UserEntry) -> Option<(Retire, &'a str)> {
    first_mapping(cfg, entry).and_then(|m| m.action.map(|a| (a, m.attribute.as_str())))
}

/// Decide one request. `deadline` bounds the whole of it. `ldap` says where
/// directory connections come from; `db` where database connections come
/// from: no connection is held while the directory is asked
/// ([`StoreSource::release`]), so an LDAP outage costs mailcow's database nothing.
pub fn decide(
    cfg: &Config,
    ldap: Backend,
    db: &mut dyn StoreSource,
    req: &Request,
    deadline: Instant,
    trace: &mut dyn Trace,
) -> Decision {
    let mut d = Decision {
        result: Err(Failure::UnknownUser),
        host: None,
        entry: None,
    };
    let mut app_pw = 0;
    let as_sogo;
    let (req, sogo_password) = match sogo_login(cfg, db, req, deadline, trace) {
        Sogo::Not => (req, false),
        Sogo::SingleSignOn(result) => {
            d.result = result;
            if let (Ok(acc), false) = (&d.result, req.dry_run) {
                // mailcowauth.php: set_sasl_log(username, real_rip, "SOGO").
                write_sasl_log(db, deadline, acc, req, "SOGO", 0);
            }
            return d;
        }
        Sogo::Refused(f) => {
            d.result = Err(f);
            return d;
        }
        Sogo::Password(r) => {
            as_sogo = r;
            (&as_sogo, true)
        }
    };
    d.result = decide_inner(
        cfg,
        ldap,
        db,
        req,
        deadline,
        trace,
        &mut d.host,
        &mut d.entry,
        &mut app_pw,
    );
    if let Ok(acc) = &d.result {
        if cfg.full_passdb && req.kind == RequestKind::Password && !req.dry_run {
            // A SOGo login: mailcow logs "SOGO" after an app password and
            // the service it passed on ("NONE") after the mailbox's own.
            let service = match (sogo_password, app_pw) {
                (true, 0) => "NONE",
                (true, _) => "SOGO",
                (false, _) => req.service.as_deref().unwrap_or(""),
            };
            write_sasl_log(db, deadline, acc, req, service, app_pw);
        }
    }
    d.result = d.result.map_err(|f| told(cfg, f));
    d
}

/// A [`Failure::NoLogin`] whose `[messages]` text is empty: the admin wants
/// no reason given, so it is the plain refusal it was before.
fn told(cfg: &Config, f: Failure) -> Failure {
    match f {
        Failure::NoLogin(r, _) if cfg.messages.text(r).is_empty() => f.unverified(),
        f => f,
    }
}

/// What [`sogo_login`] found.
enum Sogo {
    /// Not a password login from SOGo's address.
    Not,
    /// The password is SOGo's single sign-on secret: decided, no directory.
    SingleSignOn(Result<Accepted, Failure>),
    /// Refused before anything else (not ours, the secret unreadable).
    Refused(Failure),
    /// Another password from SOGo's address (a DAV or EAS client's, which
    /// SOGo passes on): decided as usual, without a service (mailcow's
    /// `'NONE'`: no `<service>_access`, no app password flag).
    Password(Request),
}

/// SOGo's logins, as mailcow's `mailcowauth.php` (data/conf/dovecot/auth/)
/// takes them: a request whose `real_rip` is SOGo's address and whose
/// password equals the single sign-on secret (`/etc/sogo-sso/sogo-sso.pass`,
/// compared whole, as its `===`) logs in; mailcow checks nothing else there
/// and lets its SQL userdb refuse a mailbox that is not active 1 or 2, so
/// serve asks for the mailbox row and [`provision::lookup_allowed`] (the
/// same rule), and binds to nothing. Any other password from SOGo's address
/// goes on as mailcow's `apppass_login()` / `user_login()` with service
/// `'NONE'`. The secret is not a user's password: it is never tried against
/// LDAP when it matches; one that does not match cannot be told from a
/// user's password and is decided as one (one bind for an `ldap` mailbox,
/// where mailcow's PHP binds twice).
///
/// Without `sogo_sso_file` (or with `passdb = "ldap-only"`), SOGo's logins
/// are not ours: mailcow's passdb checks them, serve never binds for them.
fn sogo_login(
    cfg: &Config,
    db: &mut dyn StoreSource,
    req: &Request,
    deadline: Instant,
    trace: &mut dyn Trace,
) -> Sogo {
    if req.kind != RequestKind::Password || !from_sogo(cfg, req) {
        return Sogo::Not;
    }
    let Some(password) = req.password.as_ref().filter(|p| !p.is_empty()) else {
        return Sogo::Not;
    };
    let not_ours = || {
        Sogo::Refused(Failure::NotOurs(
            "a login from SOGo's address (mailcow.sogo_address)".into(),
        ))
    };
    let Some(path) = cfg.sogo_sso_file.as_deref().filter(|_| cfg.full_passdb) else {
        trace.step("the login comes from SOGo's address: mailcow's passdb decides");
        return not_ours();
    };
    let secret = match crate::trusted_file::read_trusted(path, false) {
        Ok(t) => t.text,
        // An unreadable secret must not turn SOGo's logins into LDAP binds.
        Err(e) => {
            return Sogo::Refused(Failure::Temporary(format!(
                "mailcow.sogo_sso_file {}: {e}",
                path.display()
            )))
        }
    };
    if !secret.is_empty() && passhash::ct_eq(secret.as_bytes(), password.expose().as_bytes()) {
        trace.step("SOGo's single sign-on secret from SOGo's address: the directory is not asked");
        return Sogo::SingleSignOn(sso_mailbox(cfg, db, req, deadline, trace));
    }
    trace.step("from SOGo's address, not the single sign-on secret: decided without a service, as mailcow's 'NONE'");
    Sogo::Password(Request {
        login: req.login.clone(),
        password: req.password.clone(),
        kind: req.kind,
        service: None,
        remote_ip: req.remote_ip.clone(),
        dry_run: req.dry_run,
    })
}

/// The mailbox a single sign-on logs in (it must exist and receive mail).
fn sso_mailbox(
    cfg: &Config,
    db: &mut dyn StoreSource,
    req: &Request,
    deadline: Instant,
    trace: &mut dyn Trace,
) -> Result<Accepted, Failure> {
    validate_login(&req.login)?;
    let addr = provision::login_as_address(&req.login).ok_or(Failure::UnknownUser)?;
    let Some(store) = db.get(deadline)? else {
        return Err(Failure::UnknownUser);
    };
    let row = store.mailbox(&addr)?.ok_or(Failure::UnknownUser)?;
    provision::lookup_allowed(&row)?;
    trace.step(&format!("single sign-on for mailbox {}", row.username));
    Ok(Accepted {
        fields: fields(cfg, &row.username, Some(row.quota)),
        user: row.username,
    })
}

/// The `sasl_log` row mailcow's `mailcowauth.php` writes after each
/// successful login (`set_sasl_log()`): username, real_rip, service and the
/// app password's id (0: the mailbox's own password). A failure to write it
/// is logged; the login stands, as in mailcow (which ignores it).
fn write_sasl_log(
    db: &mut dyn StoreSource,
    deadline: Instant,
    acc: &Accepted,
    req: &Request,
    service: &str,
    app_pw: i64,
) {
    let rip = req.remote_ip.as_deref().unwrap_or("");
    let r = db.get(deadline).and_then(|s| match s {
        Some(store) => store.sasl_log(&acc.user, rip, service, app_pw),
        None => Ok(()),
    });
    if let Err(e) = r {
        log::error(&format!("sasl_log for {}: {e}", log::clean(&acc.user)));
    }
}

/// Whether the request comes from SOGo's address (`[mailcow] sogo_address`),
/// as mailcow's `mailcowauth.php` tells SOGo's logins apart:
/// `real_rip == IPV4_NETWORK . '.248'`.
fn from_sogo(cfg: &Config, req: &Request) -> bool {
    let (Some(sogo), Some(rip)) = (cfg.sogo_address, req.remote_ip.as_deref()) else {
        return false;
    };
    rip.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.to_canonical() == sogo.to_canonical())
}

/// Whether a refused password login may still be accepted by another
/// passdb after this one (mailcow's own, in mailcow's Dovecot): then the
/// HTTP answer says `"not_ours": true` and the Lua passdb hands the login
/// on; every other refusal is final, so a wrong LDAP password is tried
/// once (one failed bind), never again by mailcow's PHP.
/// - [`Failure::NotOurs`]: a `keycloak` / `generic-oidc` mailbox, the
///   Identity Provider switched away from LDAP, SOGo's single sign-on;
/// - with `passdb = "ldap-only"` every refusal: app passwords and
///   mailcow-SQL passwords are then mailcow's passdb's to check.
///
/// A refusal the user is told ([`Failure::NoLogin`]) is final in both modes.
///
/// A temporary failure is no refusal (the chain goes on and remembers it).
pub fn passed_on(cfg: &Config, f: &Failure) -> bool {
    match f {
        Failure::NotOurs(_) => true,
        // The password was right and the user is told why: final, also
        // with `ldap-only` (mailcow's passdb would refuse it too).
        Failure::NoLogin(..) => false,
        Failure::BadRequest(_)
        | Failure::UnknownUser
        | Failure::Ambiguous(_)
        | Failure::WrongPassword
        | Failure::Denied(_) => !cfg.full_passdb,
        Failure::Temporary(_) | Failure::Misuse(_) => false,
    }
}

/// What [`before_bind`] decided.
enum Early {
    /// Accepted without the directory (an app password, a mailcow-SQL
    /// password), with the app password's id (0: none).
    Accepted(Accepted, i64),
    /// The directory decides: bind (the row, when the mailbox exists).
    Bind(Option<MailboxRow>),
}

/// Everything mailcow's passdb checks that needs no directory, in mailcow's
/// order (`mailcowauth.php`: `apppass_login()`, then `user_login()`, in
/// `data/web/inc/functions.auth.inc.php`), so a login it refuses costs the
/// directory nothing, and a login with an app password never reaches it:
/// 1. the app passwords of the mailbox; one that matches but is inactive or
///    refuses this service is refused here (mailcow would try it as the
///    LDAP password, and the directory would count a failure);
/// 2. the mailbox active 1 (2 is "disallow login"), its domain active and
///    `<service>_access` (a mailbox sync deactivated still binds: a
///    successful bind reactivates it, see [`repair_after_sync`]);
/// 3. by authsource: `mailcow` verifies `mailbox.password`, `keycloak` and
///    `generic-oidc` are not ours, `ldap` binds.
///
/// No mailbox: with login provisioning the directory decides (a first
/// login), without it the user is unknown.
fn before_bind(
    cfg: &Config,
    login: Option<LoginMailbox>,
    password: &Secret,
    req: &Request,
    trace: &mut dyn Trace,
) -> Result<Early, Failure> {
    let Some(LoginMailbox {
        row,
        hash,
        kind,
        app_passwords,
    }) = login
    else {
        if cfg.provisioning.login_provisioning {
            return Ok(Early::Bind(None));
        }
        trace.step(
            "no mailbox, and provisioning.login_provisioning is off: not asking the directory",
        );
        return Err(Failure::UnknownUser);
    };
    let pw = password.expose().as_bytes();
    // mailcow's login queries skip resources: `kind NOT REGEXP 'location|thing|group'`.
    if ["location", "thing", "group"]
        .iter()
        .any(|k| kind.contains(k))
    {
        trace.step(&format!(
            "mailbox {} is a resource (kind {kind})",
            row.username
        ));
        return Err(Failure::Denied(format!(
            "mailbox is a resource (kind \"{kind}\"): resources do not log in"
        )));
    }
    let flag = req.service.as_deref().and_then(provision::access_flag);
    let usable = row.may_log_in() && row.domain_active == Some(true);
    for app in app_passwords {
        if !passhash::verify(&app.hash, pw) {
            continue;
        }
        if !app.active {
            trace.step(&format!("app password {} matches but is inactive", app.id));
            return Err(Failure::Denied(format!(
                "the password is app password {}, which is inactive",
                app.id
            )));
        }
        if !app.allows(flag.as_deref()) {
            let f = flag.unwrap_or_default();
            trace.step(&format!(
                "app password {} matches, {f} is off for it",
                app.id
            ));
            return Err(Failure::Denied(format!(
                "the password is app password {}, which has {f} off",
                app.id
            )));
        }
        // mailcow's `apppass_login()` asks for mailbox and domain active 1,
        // and not the mailbox's own `<service>_access`.
        if !usable {
            provision::login_allowed(&row, None)?;
        }
        trace.step(&format!(
            "app password {} accepted: the directory is not asked",
            app.id
        ));
        return Ok(Early::Accepted(
            Accepted {
                fields: fields(cfg, &row.username, Some(row.quota)),
                user: row.username.clone(),
            },
            app.id,
        ));
    }
    let by_sync = row.is_ldap() && row.attr(DEACTIVATED_BY_SYNC).as_deref() == Some("1");
    if by_sync && row.active == 0 {
        // The bind decides; login_allowed runs again after the repair.
        trace.step("mailbox deactivated by sync: the directory decides whether it comes back");
        return Ok(Early::Bind(Some(row)));
    }
    if row.is_ldap() && row.attributes.contains_key(RETIRED_BY_VALUE) && row.active != 1 {
        // A retiring value set it: the directory decides whether it comes back.
        trace.step(
            "mailbox retired by a directory value: the directory decides whether it comes back",
        );
        return Ok(Early::Bind(Some(row)));
    }
    if let Err(f) = provision::login_allowed(&row, req.service.as_deref()) {
        // Decided before the password was checked: the user may be told
        // why (a "disallow login" mailbox, a protocol it may not use) only
        // when it matches a mailcow password; an `ldap` mailbox is refused
        // before any bind, as mailcow does, and so without a reason.
        let verified = matches!(f, Failure::NoLogin(..))
            && row.authsource == "mailcow"
            && passhash::verify(&hash, pw);
        return Err(if verified { f } else { f.unverified() });
    }
    match row.authsource.as_str() {
        "ldap" => Ok(Early::Bind(Some(row))),
        "mailcow" => {
            if !passhash::verify(&hash, pw) {
                trace.step("mailcow mailbox: the SQL password does not match");
                return Err(Failure::WrongPassword);
            }
            trace.step("mailcow mailbox: the SQL password matches; the directory is not asked");
            Ok(Early::Accepted(
                Accepted {
                    fields: fields(cfg, &row.username, Some(row.quota)),
                    user: row.username.clone(),
                },
                0,
            ))
        }
        other => {
            trace.step(&format!(
                "mailbox {} has authsource {other}: not ours, mailcow's passdb decides",
                row.username
            ));
            Err(Failure::NotOurs(format!("authsource {other}")))
        }
    }
}

fn fields(cfg: &Config, user: &str, quota: Option<u64>) -> UserFields {
    UserFields {
        uid: cfg.dovecot.uid.clone(),
        gid: cfg.dovecot.gid.clone(),
        home: expand_home(&cfg.dovecot.home, user),
        quota_bytes: quota,
    }
}

#[allow(clippy::too_many_arguments)]
fn decide_inner(
    cfg: &Config,
    ldap: Backend,
    db: &mut dyn StoreSource,
    req: &Request,
    deadline: Instant,
    trace: &mut dyn Trace,
    host: &mut Option<String>,
    found_entry: &mut Option<UserEntry>,
    app_pw: &mut i64,
) -> Result<Accepted, Failure> {
    validate_login(&req.login)?;
    let password = match req.kind {
        RequestKind::Lookup => None,
        RequestKind::Password => match &req.password {
            Some(p) if !p.is_empty() => Some(p),
            // Never bind with an empty password: it is an "unauthenticated" bind.
            _ => return Err(Failure::BadRequest("empty password".into())),
        },
    };
    // With a database, a lookup is answered from mailcow's mailboxes alone.
    if req.kind == RequestKind::Lookup && db.configured() {
        let Some(store) = db.get(deadline)? else {
            return Err(Failure::UnknownUser);
        };
        let addr = provision::login_as_address(&req.login).ok_or(Failure::UnknownUser)?;
        let row = store.mailbox(&addr)?.ok_or(Failure::UnknownUser)?;
        // The full passdb logs every mailbox in, so its userdb answers for
        // every one too (mailcow's `user_query` does not look at authsource).
        if !row.is_ldap() && !cfg.full_passdb {
            return Err(Failure::Denied("not an LDAP mailbox".into()));
        }
        provision::lookup_allowed(&row)?;
        trace.step(&format!("mailbox {} found, active", row.username));
        return Ok(Accepted {
            fields: fields(cfg, &row.username, Some(row.quota)),
            user: row.username,
        });
    }

    // A mailbox of another authsource is not ours: say no before asking the
    // directory. With the full passdb, everything mailcow checks without LDAP
    // is checked here first ([`before_bind`]).
    let mut known = None;
    let attrs = wanted_attributes(cfg);
    let mut dir = Directory::with_backend(&cfg.ldap, ldap, deadline);
    if let (true, Some(addr)) = (db.configured(), provision::login_as_address(&req.login)) {
        // One-shot: the directory's TCP/TLS connection opens while the
        // database answers; nothing is bound until the row says so.
        if password.is_some() {
            dir.preopen();
        }
        let Some(store) = db.get(deadline)? else {
            return Err(Failure::UnknownUser);
        };
        if let (true, Some(p)) = (cfg.full_passdb, password) {
            // Mailbox, domain, SQL password and app passwords in one statement.
            let login = store.login_mailbox(&addr)?;
            match before_bind(cfg, login, p, req, trace)? {
                Early::Accepted(acc, id) => {
                    *app_pw = id;
                    return Ok(acc);
                }
                Early::Bind(row) => known = row,
            }
        } else if !cfg.full_passdb {
            if let Some(row) = store.mailbox(&addr)? {
                if !row.is_ldap() {
                    trace.step(&format!(
                        "mailbox {addr} has authsource {}: not an LDAP mailbox",
                        row.authsource
                    ));
                    return Err(Failure::Denied("not an LDAP mailbox".into()));
                }
                known = Some(row);
            }
        }
    }

    // No database connection is held while the directory answers; when every
    // host failed recently (an outage), it is not even kept for a quick answer.
    db.release(dir.all_hosts_failed_recently());
    let found = dir.find_user(&req.login, password, &attrs, trace);
    *host = dir.answered_by.as_ref().map(|h| h.label());
    let Found { entry, host: h } = found?;
    *host = Some(h.label());
    let entry = &*found_entry.insert(entry);

    let Some(store) = db.get(deadline)? else {
        // The directory's spelling, never the typed one.
        let user = provision::canonical_user(cfg, entry, &req.login)?;
        trace.step(&format!("user from the directory entry: {user}"));
        return Ok(Accepted {
            fields: fields(cfg, &user, None),
            user,
        });
    };
    let address = provision::canonical_address(cfg, entry, &req.login)?;
    trace.step(&format!("mailbox address: {address}"));
    let row = match known.filter(|r| r.username == address) {
        Some(r) => Some(r),
        None => store.mailbox(&address)?,
    };
    let row = match row {
        Some(row) if !row.is_ldap() => return Err(Failure::Denied("not an LDAP mailbox".into())),
        Some(row) => {
            let row = repair_after_sync(store, row, req.dry_run, trace)?;
            let row = apply_retiring_value(cfg, store, row, entry, req.dry_run, trace)?;
            provision::login_allowed(&row, req.service.as_deref())?;
            if update_existing(cfg, store, &row, entry, req.dry_run, trace)? {
                store.mailbox(&address)?.ok_or(Failure::UnknownUser)?
            } else {
                row
            }
        }
        None if retiring(cfg, entry).is_some() => {
            let (action, value) = retiring(cfg, entry).unwrap_or((Retire::Deactivate, ""));
            trace.step(&format!(
                "no mailbox, and the directory value \"{value}\" maps to action {}: none is created",
                action.name()
            ));
            return Err(Failure::Denied(format!(
                "no mailbox, and the directory value \"{value}\" retires it (action {}): none is created",
                action.name()
            )));
        }
        None if req.dry_run => {
            let accepted = create_new_dry_run(cfg, store, entry, &address, trace)?;
            let (wanted, _) = provision::directory_aliases(&cfg.alias_attributes, entry, &address);
            if !wanted.is_empty() {
                trace.step(&format!(
                    "dry run: would then add the directory's aliases where mailcow has their domain: {}",
                    wanted.join(", ")
                ));
            }
            return Ok(accepted);
        }
        None => create_new(cfg, store, entry, &address, trace)?,
    };
    keep_aliases(cfg, store, entry, &row.username, req.dry_run, trace)?;
    provision::login_allowed(&row, req.service.as_deref())?;
    Ok(Accepted {
        fields: fields(cfg, &row.username, Some(row.quota)),
        user: row.username,
    })
}

/// The user bound and passed the filter, so they are in the directory: undo
/// what sync did to their mailbox (a deactivation by sync, a "missing since"
/// mark), never what an admin did. Returns the row as it is now.
fn repair_after_sync(
    store: &mut Store,
    row: MailboxRow,
    dry_run: bool,
    trace: &mut dyn Trace,
) -> Result<MailboxRow, Failure> {
    let by_sync = row.attr(DEACTIVATED_BY_SYNC).as_deref() == Some("1");
    if !by_sync && !row.attributes.contains_key(MISSING_SINCE) {
        return Ok(row);
    }
    if dry_run {
        trace.step(&format!(
            "dry run: would {} (the user is in the directory)",
            if by_sync {
                "reactivate the mailbox sync deactivated"
            } else {
                "clear the sync's \"missing since\" mark"
            }
        ));
        let mut row = row;
        if by_sync {
            row.active = 1;
        }
        return Ok(row);
    }
    match store.found_present(&row.username)? {
        Presence::Reactivated => {
            trace.step("mailbox reactivated: sync had deactivated it");
            log::info(&format!(
                "mailbox {} reactivated at login: sync had deactivated it, and the user is in the directory and the filter again",
                log::clean(&row.username)
            ));
        }
        Presence::Cleared => trace.step("sync's \"missing since\" mark cleared"),
        Presence::Unchanged => {}
    }
    Ok(store.mailbox(&row.username)?.unwrap_or(row))
}

/// A retiring value ([`retiring`]): set `active` as it says (unless an
/// admin set the mailbox's state) and refuse the login. No retiring value:
/// undo what an earlier one did. Returns the row as it is now.
fn apply_retiring_value(
    cfg: &Config,
    store: &mut Store,
    row: MailboxRow,
    entry: &UserEntry,
    dry_run: bool,
    trace: &mut dyn Trace,
) -> Result<MailboxRow, Failure> {
    let Some((action, value)) = retiring(cfg, entry) else {
        if !row.attributes.contains_key(RETIRED_BY_VALUE) {
            return Ok(row);
        }
        if dry_run {
            trace.step("dry run: would reactivate the mailbox a retiring directory value had set (the value is gone)");
            return Ok(MailboxRow { active: 1, ..row });
        }
        if store.unretire(&row.username)? {
            trace.step("mailbox active again: the retiring directory value is gone");
            log::info(&format!(
                "mailbox {} active again at login: the directory value that retired it is gone",
                log::clean(&row.username)
            ));
        }
        return Ok(store.mailbox(&row.username)?.unwrap_or(row));
    };
    let what = format!(
        "the directory value \"{value}\" retires the mailbox (action {}, active {})",
        action.name(),
        action.active()
    );
    if dry_run {
        trace.step(&format!(
            "dry run: {what}: would set it and refuse the login"
        ));
    } else if store.retire(&row.username, action)? {
        log::info(&format!(
            "mailbox {} set to active {} at login: {what}",
            log::clean(&row.username),
            action.active()
        ));
        trace.step(&format!("{what}: set"));
    } else {
        trace.step(&format!(
            "{what}: left as it is (already so, or set by an admin)"
        ));
    }
    // The bind verified the password: a mailbox set to "disallow login" is
    // refused with that reason, a deactivated one plainly.
    Err(match action {
        Retire::DisallowLogin => Failure::NoLogin(Reason::LoginDisabled, what),
        Retire::Deactivate => Failure::Denied(what),
    })
}

/// Bring the mailbox's aliases in step with the entry's `alias_attributes`
/// (nothing when none is configured); with `dry_run` only say what would change.
pub fn keep_aliases(
    cfg: &Config,
    store: &mut Store,
    entry: &UserEntry,
    mailbox: &str,
    dry_run: bool,
    trace: &mut dyn Trace,
) -> Result<Vec<crate::mailcow::AliasChange>, Failure> {
    if cfg.alias_attributes.is_empty() {
        return Ok(Vec::new());
    }
    let (wanted, invalid) = provision::directory_aliases(&cfg.alias_attributes, entry, mailbox);
    for i in &invalid {
        log::warn(&format!(
            "mailbox {}: {}",
            log::clean(mailbox),
            log::clean(i)
        ));
    }
    let changes = store.keep_directory_aliases(mailbox, &wanted, dry_run)?;
    for c in &changes {
        let text = c.describe(mailbox);
        if dry_run && c.writes() {
            trace.step(&format!("dry run: would write: {text}"));
        } else {
            trace.step(&text);
        }
        if dry_run {
            continue;
        }
        match c {
            crate::mailcow::AliasChange::Conflict { .. }
            | crate::mailcow::AliasChange::LimitReached { .. } => log::warn(&log::clean(&text)),
            crate::mailcow::AliasChange::UnknownDomain { .. } => {}
            _ => log::info(&log::clean(&text)),
        }
    }
    Ok(changes)
}

/// The template a mapping (not the default) selects, read from the database.
fn mapped_template(
    cfg: &Config,
    store: &mut Store,
    entry: &UserEntry,
) -> Result<Option<Template>, Failure> {
    match choose_template(cfg, entry) {
        Some((name, Some(_))) => store.template(name),
        _ => Ok(None),
    }
}

/// Bring an existing `ldap` mailbox in step with its mapped template and name.
/// Returns whether anything was written.
fn update_existing(
    cfg: &Config,
    store: &mut Store,
    row: &MailboxRow,
    entry: &UserEntry,
    dry_run: bool,
    trace: &mut dyn Trace,
) -> Result<bool, Failure> {
    let template = mapped_template(cfg, store, entry)?;
    let name = provision::display_name(entry, &row.username);
    let now = provision::sql_datetime(unix_now());
    match provision::plan_update(row, &name, template.as_ref(), &now) {
        None => {
            trace.step("mailbox is up to date with its template");
            Ok(false)
        }
        Some(upd) => {
            trace.step(&format!(
                "updating mailbox {} ({})",
                row.username,
                if upd.acl.is_some() {
                    "template changed"
                } else {
                    "display name changed"
                }
            ));
            if dry_run {
                trace.step(&format!(
                    "dry run: would set name \"{}\", quota {} bytes, attributes {}",
                    upd.name,
                    upd.quota,
                    upd.attributes_json()
                ));
                return Ok(false);
            }
            if !store.update_mailbox(&upd)? {
                // Another login or a sync applied the same meanwhile.
                trace.step("already updated by another login or sync");
                return Ok(true);
            }
            log::info(&format!(
                "mailbox {} updated from the directory",
                log::clean(&row.username)
            ));
            apply_rate_limit(cfg, &row.username, upd.rate_limit.as_ref());
            Ok(true)
        }
    }
}

/// The template's rate limit into mailcow's Redis after the mailbox was
/// written; a Redis problem is logged, never a failed login (mailcow's
/// mailbox('add') goes on without it too).
pub fn apply_rate_limit(cfg: &Config, mailbox: &str, rl: Option<&provision::RateLimit>) {
    let Some(rl) = rl else { return };
    if let Err(e) = crate::cronlog::write_rate_limit(cfg.redis_url.as_ref(), mailbox, rl) {
        log::warn(&format!(
            "mailbox {}: the template's rate limit was not written to mailcow's Redis ({e})",
            log::clean(mailbox)
        ));
    }
}

/// The mailbox a first login would create, or why there is none.
fn planned_mailbox(
    cfg: &Config,
    store: &mut Store,
    entry: &UserEntry,
    address: &str,
) -> Result<NewMailbox, Failure> {
    if !cfg.provisioning.login_provisioning {
        return Err(Failure::Denied(
            "no mailbox, and provisioning.login_provisioning is off".into(),
        ));
    }
    let (name, _) = choose_template(cfg, entry).ok_or_else(|| {
        Failure::Denied("no attribute mapping matched and no default_template is set".into())
    })?;
    let template = store.template(name)?.ok_or_else(|| {
        Failure::Denied(format!(
            "mailbox template \"{name}\" does not exist in mailcow"
        ))
    })?;
    let display = provision::display_name(entry, address);
    Ok(provision::new_mailbox(
        address,
        &display,
        &template,
        &provision::sql_datetime(unix_now()),
    ))
}

/// What a first login would create, checked against the domain, written nowhere.
fn create_new_dry_run(
    cfg: &Config,
    store: &mut Store,
    entry: &UserEntry,
    address: &str,
    trace: &mut dyn Trace,
) -> Result<Accepted, Failure> {
    let new = planned_mailbox(cfg, store, entry, address)?;
    let domain = store.domain(&new.domain)?;
    let quota = provision::check_domain_room(&new.domain, new.template_quota, domain.as_ref())?;
    trace.step(&format!(
        "dry run: would create mailbox {address} (name \"{}\", template \"{}\", quota {quota} bytes, active {}), \
         its alias, quota2/quota2replica rows, user_acl {:?}, tags {:?}",
        new.name, new.template, new.active, new.acl, new.tags
    ));
    Ok(Accepted {
        fields: fields(cfg, address, Some(quota)),
        user: address.to_owned(),
    })
}

/// Create the mailbox of a user who logs in for the first time.
fn create_new(
    cfg: &Config,
    store: &mut Store,
    entry: &UserEntry,
    address: &str,
    trace: &mut dyn Trace,
) -> Result<MailboxRow, Failure> {
    let new = planned_mailbox(cfg, store, entry, address)?;
    trace.step(&format!(
        "creating mailbox {address} from template \"{}\"",
        new.template
    ));
    let created = store.create_mailbox(&new)?;
    if created == Created::Created {
        log::info(&format!(
            "mailbox {} created from template \"{}\"",
            log::clean(address),
            log::clean(&new.template)
        ));
        apply_rate_limit(cfg, address, new.rate_limit.as_ref());
    }
    store.mailbox(address)?.ok_or_else(|| {
        Failure::Temporary("the new mailbox vanished right after its creation".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_expansion() {
        assert_eq!(
            expand_home("/var/vmail/%d/%n", "jo@ex.org"),
            "/var/vmail/ex.org/jo"
        );
        assert_eq!(expand_home("/h/%u/%%/%x", "jo"), "/h/jo/%/%x");
        assert_eq!(expand_home("/h/%d", "jo"), "/h/");
        assert_eq!(expand_home("/h/%", "jo"), "/h/%");
    }

    #[test]
    fn login_shape() {
        assert!(validate_login("jo@example.org").is_ok());
        assert!(validate_login("Jö Doe").is_ok());
        assert!(matches!(validate_login(""), Err(Failure::BadRequest(_))));
        assert!(matches!(
            validate_login("a\nb"),
            Err(Failure::BadRequest(_))
        ));
        assert!(matches!(validate_login(" a"), Err(Failure::BadRequest(_))));
        assert!(matches!(
            validate_login(&"a".repeat(257)),
            Err(Failure::BadRequest(_))
        ));
    }

    fn config(extra: &str) -> Config {
        let text = format!(
            "[ldap]\nhosts = \"ldap.example.org\"\nbase_dn = \"dc=example,dc=org\"\n{extra}"
        );
        crate::config::parse_str(&text)
            .unwrap()
            .validate(
                std::path::Path::new("t.toml"),
                crate::config::UiSettings::default(),
            )
            .unwrap()
    }

    #[test]
    fn refusals_passed_on_to_the_next_passdb() {
        let full = config("[database]\npassword = \"p\"\n");
        let ldap_only = config("");
        assert!(full.full_passdb && !ldap_only.full_passdb);
        let cases = [
            (Failure::NotOurs("authsource keycloak".into()), true, true),
            (Failure::WrongPassword, false, true),
            (Failure::UnknownUser, false, true),
            (Failure::Denied("inactive".into()), false, true),
            (
                Failure::NoLogin(Reason::PasswordExpired, "expired".into()),
                false,
                false,
            ),
            (Failure::Ambiguous(2), false, true),
            (Failure::BadRequest("empty password".into()), false, true),
            (Failure::Temporary("ldap down".into()), false, false),
            (Failure::Misuse("x".into()), false, false),
        ];
        for (f, in_full, in_ldap_only) in cases {
            assert_eq!(passed_on(&full, &f), in_full, "full: {f:?}");
            assert_eq!(passed_on(&ldap_only, &f), in_ldap_only, "ldap-only: {f:?}");
        }
    }

    #[test]
    fn an_empty_message_is_the_plain_refusal() {
        let cfg = config("[messages]\nlogin_disabled = \"\"\n");
        assert_eq!(
            told(
                &cfg,
                Failure::NoLogin(Reason::LoginDisabled, "active 2".into())
            ),
            Failure::Denied("active 2".into())
        );
        let f = Failure::NoLogin(Reason::MustChangePassword, "773".into());
        assert_eq!(told(&cfg, f.clone()), f);
        assert_eq!(told(&cfg, Failure::WrongPassword), Failure::WrongPassword);
    }

    #[test]
    fn sogo_is_told_by_its_address() {
        let cfg = config("[mailcow]\nsogo_address = \"172.22.1.248\"\n");
        let req = |rip: Option<&str>| Request {
            login: "jo@example.org".into(),
            password: Some(Secret::new("x".into())),
            kind: RequestKind::Password,
            service: Some("imap".into()),
            remote_ip: rip.map(str::to_owned),
            dry_run: false,
        };
        assert!(from_sogo(&cfg, &req(Some("172.22.1.248"))));
        assert!(from_sogo(&cfg, &req(Some("::ffff:172.22.1.248"))));
        assert!(!from_sogo(&cfg, &req(Some("172.22.1.249"))));
        assert!(!from_sogo(&cfg, &req(Some("garbage"))));
        assert!(!from_sogo(&cfg, &req(None)));
        assert!(!from_sogo(&config(""), &req(Some("172.22.1.248"))));
    }

    #[test]
    fn quota_rule_only_when_set() {
        let mut f = UserFields {
            uid: "1".into(),
            gid: "2".into(),
            home: "/h".into(),
            quota_bytes: None,
        };
        assert_eq!(f.pairs().len(), 3);
        f.quota_bytes = Some(0);
        assert_eq!(f.pairs().len(), 3);
        f.quota_bytes = Some(1024);
        assert_eq!(f.pairs()[3], ("quota_rule", "*:bytes=1024".to_owned()));
    }
}
