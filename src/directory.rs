//! The directory: find a user's entry with the service account and bind as
//! that user, trying the configured hosts in order.
//!
//! A host is left for the next one only for reasons that say nothing about
//! the user: connection refused, name resolution, timeouts, TLS or StartTLS
//! failure, "busy"/"unavailable". Once a server has answered about the user
//! (no entry, two entries, wrong password), that answer is final.

use crate::config::{FilterTemplate, Host, LdapConfig, TlsMode};
use crate::health::{unix_now, unix_now_ms, HostHealth};
use crate::outcome::{Failure, Reason};
use crate::secret::Secret;
use crate::tls;
use ldap3::controls::RawControl;
use ldap3::{LdapConn, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};
use rustls::ClientConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// LDAP result codes (RFC 4511, appendix A) this module acts on.
pub mod rc {
    pub const SUCCESS: u32 = 0;
    pub const TIME_LIMIT_EXCEEDED: u32 = 3;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const STRONGER_AUTH_REQUIRED: u32 = 8;
    pub const REFERRAL: u32 = 10;
    pub const CONFIDENTIALITY_REQUIRED: u32 = 13;
    pub const CONSTRAINT_VIOLATION: u32 = 19;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const INSUFFICIENT_ACCESS: u32 = 50;
    pub const BUSY: u32 = 51;
    pub const UNAVAILABLE: u32 = 52;
    pub const UNWILLING_TO_PERFORM: u32 = 53;
}

/// Receives a line for each step, for the `test` and `connection-test`
/// commands. Logins use [`Silent`].
pub trait Trace {
    fn step(&mut self, line: &str);
}

/// A trace that records nothing.
pub struct Silent;

impl Trace for Silent {
    fn step(&mut self, _line: &str) {}
}

/// A directory entry: its DN and its attributes, names lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserEntry {
    pub dn: String,
    pub attrs: BTreeMap<String, Vec<String>>,
}

impl UserEntry {
    pub fn from_search(e: SearchEntry) -> UserEntry {
        let mut attrs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in e.attrs {
            attrs.entry(k.to_ascii_lowercase()).or_default().extend(v);
        }
        UserEntry { dn: e.dn, attrs }
    }

    /// Every value of an attribute (name compared without regard to case).
    pub fn values(&self, attr: &str) -> &[String] {
        self.attrs
            .get(&attr.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The first value, for single-valued attributes such as displayName.
    pub fn first(&self, attr: &str) -> Option<&str> {
        self.values(attr).first().map(String::as_str)
    }
}

/// Build the search filter for a login. The login is escaped (RFC 4515), so
/// `*`, `(`, `)`, `\` and NUL in it match only themselves.
pub fn user_filter(template: &FilterTemplate, username_field: &str, login: &str) -> String {
    let value = ldap3::ldap_escape(login);
    match template {
        FilterTemplate::And { extra: None } => format!("({username_field}={value})"),
        FilterTemplate::And { extra: Some(f) } => format!("(&{f}({username_field}={value}))"),
        FilterTemplate::Placeholder(f) => expand_placeholders(f, &value),
    }
}

/// Replace every `%u` and `%s` in `template` with `value`, in one pass: text
/// that came from the value is never scanned again (a login `a%sb` expanded
/// twice before).
fn expand_placeholders(template: &str, value: &str) -> String {
    let mut out = String::with_capacity(template.len() + value.len());
    let mut rest = template;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if after.starts_with('u') || after.starts_with('s') {
            out.push_str(value);
            rest = &after[1..];
        } else {
            out.push('%');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Why one host could not be used; the next host is tried.
#[derive(Debug, Clone)]
pub struct HostFailure {
    pub reason: String,
    pub hint: &'static str,
}

/// The outcome of a try on one host.
#[derive(Debug)]
pub enum Attempt {
    /// Leave this host, try the next.
    NextHost(HostFailure),
    /// A final answer: no other host is asked.
    Final(Failure),
}

/// What a successful search (and bind, when a password was given) found.
#[derive(Debug, Clone)]
pub struct Found {
    pub entry: UserEntry,
    pub host: Host,
}

/// Explain an LDAP client error in words, with the fix an admin would try.
pub fn explain(e: &LdapError) -> HostFailure {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let hint = if matches!(e, LdapError::Timeout { .. }) || lower.contains("timed out") {
        "the server did not answer in time: check that the host and port are right and that no firewall drops the packets; raise ldap.connect_timeout_ms / ldap.timeout_ms if the server is slow"
    } else if lower.contains("refused") {
        "nothing listens there: check that the LDAP server runs and that ldap.hosts / ldap.port (636 for LDAPS) are right"
    } else if lower.contains("lookup address")
        || lower.contains("name or service not known")
        || lower.contains("no address")
        || lower.contains("resolve")
    {
        "the host name does not resolve: check the spelling in ldap.hosts and the DNS resolver"
    } else if lower.contains("unknownissuer")
        || lower.contains("unknown issuer")
        || lower.contains("badsignature")
    {
        "the server's certificate is not signed by a trusted CA: set ldap.ca_file to the CA certificate (PEM) that signed it, or LDAPTLS_CACERT; ignore_ssl_errors = true disables the check (unsafe)"
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        "the certificate does not name this host: put a name the certificate carries (its subjectAltName, or its CN when it has none; connection-test shows them) in ldap.hosts"
    } else if lower.contains("expired") || lower.contains("notvalidyet") {
        "the server's certificate has expired or is not yet valid: renew it, or check the clocks"
    } else if lower.contains("corrupt message")
        || lower.contains("invalidcontenttype")
        || lower.contains("received fatal alert")
        || lower.contains("handshake")
        || lower.contains("tls")
        || lower.contains("rustls")
    {
        "the TLS handshake failed: check that the port speaks the chosen mode (use_ssl = LDAPS on 636, use_tls = StartTLS on 389)"
    } else if let LdapError::LdapResult { result } = e {
        match result.rc {
            2 | 52 | 53 => "the server refused StartTLS or is unavailable: check that it has a certificate configured (olcTLSCertificateFile) or use plain LDAP/LDAPS",
            51 => "the server is busy: it will be retried",
            _ => "see the server's log for this result code",
        }
    } else if lower.contains("end of")
        || lower.contains("reset")
        || lower.contains("broken pipe")
        || lower.contains("eof")
    {
        "the server closed the connection: it may speak TLS on this port (try use_ssl) or be overloaded"
    } else {
        "check the server's log"
    };
    HostFailure { reason: text, hint }
}

/// What to do when the server refuses simple binds over an unencrypted
/// connection (result 8 or 13; AD's and Samba's default).
pub const ENCRYPTION_REQUIRED: &str = "set ldap.use_ssl or ldap.use_tls";

/// Said with every refused service bind (short: it ends a log line's reason).
pub const SERVICE_LOCKOUT: &str = "each attempt counts toward AD's lockout threshold";

/// The `data XXX` code Active Directory (and Samba) put in the diagnostic
/// text of a refused bind (result 49), e.g. `80090308: LdapErr:
/// DSID-0C09042A, comment: AcceptSecurityContext error, data 775, v3839`.
/// Only the code is taken from the server's text; the text itself is never
/// shown.
pub fn ad_data_code(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let start = lower.find("acceptsecuritycontext error, data ")?
        + "acceptsecuritycontext error, data ".len();
    let code: String = lower[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    (!code.is_empty()).then_some(code)
}

/// The password policy control (draft-behera-ldap-password-policy), which
/// OpenLDAP's ppolicy overlay answers on a bind.
pub const PPOLICY_OID: &str = "1.3.6.1.4.1.42.2.27.8.5.1";

/// The `error` of a PasswordPolicyResponseValue (BER: `SEQUENCE { warning
/// [0] ... OPTIONAL, error [1] ENUMERATED OPTIONAL }`), if it has one.
pub fn ppolicy_error(ber: &[u8]) -> Option<u8> {
    // One BER length: short form, or long form of up to two bytes.
    fn len(b: &[u8]) -> Option<(usize, usize)> {
        match *b.first()? {
            n if n < 0x80 => Some((usize::from(n), 1)),
            0x81 => Some((usize::from(*b.get(1)?), 2)),
            0x82 => Some(((usize::from(*b.get(1)?) << 8) | usize::from(*b.get(2)?), 3)),
            _ => None,
        }
    }
    if *ber.first()? != 0x30 {
        return None;
    }
    let (total, n) = len(&ber[1..])?;
    let body = ber.get(1 + n..1 + n + total)?;
    let mut i = 0;
    while i < body.len() {
        let tag = body[i];
        let (l, n) = len(body.get(i + 1..)?)?;
        let value = body.get(i + 1 + n..i + 1 + n + l)?;
        if tag == 0x81 && l == 1 {
            return Some(value[0]);
        }
        i += 1 + n + l;
    }
    None
}

/// A password-policy error in words.
pub fn ppolicy_reason(error: u8) -> Option<&'static str> {
    Some(match error {
        0 => "password expired",
        1 => "account locked out",
        2 => "must change password",
        _ => return None,
    })
}

/// What an Active Directory `data` code means, in words.
pub fn ad_reason(code: &str) -> Option<&'static str> {
    Some(match code {
        "52e" => "wrong password",
        "525" => "no such user",
        "530" => "logon not permitted at this time (logon hours)",
        "531" => "logon not permitted from this workstation",
        "532" => "password expired",
        "533" => "account disabled",
        "568" => "too many security IDs (group memberships)",
        "701" => "account expired",
        "773" => "must change password",
        "775" => "account locked out",
        _ => return None,
    })
}

/// The failure for a user bind refused with result 49: a wrong password,
/// unless the server's diagnostic names another Active Directory reason.
/// The reasons AD gives only for the right password ([`Reason::from_ad_code`])
/// are [`Failure::NoLogin`]: the user may be told; the others (`775`
/// locked out, answered whatever the password) stay plain refusals.
fn refusal(text: &str) -> Failure {
    match ad_data_code(text) {
        None => Failure::WrongPassword,
        Some(code) if code == "52e" => Failure::WrongPassword,
        Some(code) => {
            let detail = format!(
                "{} (Active Directory: data {code})",
                ad_reason(&code).unwrap_or("the directory refused the bind")
            );
            match Reason::from_ad_code(&code) {
                Some(r) => Failure::NoLogin(r, detail),
                None => Failure::Denied(detail),
            }
        }
    }
}

/// A user bind's result in words, without the server's diagnostic text
/// (it answers a request that carried the user's password): the code, and
/// Active Directory's `data` code when there is one.
fn bind_result(what: &str, r: &ldap3::LdapResult) -> String {
    match ad_data_code(&r.text) {
        Some(code) => format!(
            "{what}: result code {} (Active Directory: data {code})",
            r.rc
        ),
        None => format!("{what}: result code {}", r.rc),
    }
}

fn result_failure(what: &str, r: &ldap3::LdapResult) -> String {
    if r.text.is_empty() {
        format!("{what}: result code {}", r.rc)
    } else {
        format!("{what}: result code {} ({})", r.rc, r.text)
    }
}

/// Warm connections kept by the long-running `serve`, in two pools that never
/// mix: service-bound connections that only search, and connections that only
/// carry user binds (a bind replaces the connection's identity, so nothing is
/// ever searched or read on them). Also the in-process memory of failed hosts
/// and the optional DN cache.
pub struct LdapPool {
    idle: Mutex<Vec<Idle>>,
    binders: Mutex<Vec<Idle>>,
    max_idle: usize,
    max_bind_idle: usize,
    max_age: Duration,
    health: Mutex<HostHealth>,
    dn_cache: DnCache,
}

struct Idle {
    host: Host,
    conn: Warm,
    since: Instant,
}

/// How many operations a pooled connection carries before it is closed and
/// a new one takes its place.
///
/// ldap3 0.12.1 keeps the message id of every search that completed normally
/// in the connection's id set for as long as the connection lives (`turn()`
/// in its `conn.rs` takes an id out of `msgmap` only for a single-result
/// operation, an abandon or a timeout; `SearchStream::finish` scrubs only a
/// search that did not reach its end). On a warm connection that set grew by
/// one id per login: 8.5 MB of live heap after 800,000 logins in the
/// 10-minute soak (heaptrack; contrib/bench/SERVE.md), most of serve's RSS
/// growth. Retiring a connection after this many operations bounds the set
/// (about 10 kB) at the price of one connect and service bind per this many
/// logins.
pub const MAX_OPS_PER_CONNECTION: u32 = 1000;

/// A pooled connection and the operations it has carried.
struct Warm {
    conn: LdapConn,
    ops: u32,
}

impl Warm {
    fn new(conn: LdapConn) -> Warm {
        Warm { conn, ops: 0 }
    }
}

/// Take a warm connection to `host` from `list`, dropping stale ones.
fn take_from(list: &Mutex<Vec<Idle>>, max_age: Duration, host: &Host) -> Option<Warm> {
    let mut idle = list.lock().unwrap_or_else(|p| p.into_inner());
    idle.retain(|i| i.since.elapsed() < max_age);
    while let Some(pos) = idle.iter().rposition(|i| &i.host == host) {
        let mut i = idle.swap_remove(pos);
        if !i.conn.conn.is_closed() {
            return Some(i.conn);
        }
    }
    None
}

/// Give a healthy connection back to `list` after one more operation
/// (dropped when it holds `max` already, or when the connection has carried
/// [`MAX_OPS_PER_CONNECTION`]).
fn put_into(list: &Mutex<Vec<Idle>>, max: usize, host: &Host, mut conn: Warm) {
    conn.ops += 1;
    if conn.ops >= MAX_OPS_PER_CONNECTION {
        return;
    }
    let mut idle = list.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < max {
        idle.push(Idle {
            host: host.clone(),
            conn,
            since: Instant::now(),
        });
    }
}

/// The most entries the DN cache holds; beyond it new logins are not cached.
const DN_CACHE_MAX: usize = 100_000;

/// login -> the entry its search found (DN and the attributes read), for
/// `serve.dn_cache_seconds`. Never a password.
struct DnCache {
    ttl: Duration,
    map: Mutex<std::collections::HashMap<String, (UserEntry, Instant)>>,
}

impl DnCache {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (UserEntry, Instant)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, login: &str) -> Option<UserEntry> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut map = self.lock();
        match map.get(login) {
            Some((e, at)) if at.elapsed() < self.ttl => Some(e.clone()),
            Some(_) => {
                map.remove(login);
                None
            }
            None => None,
        }
    }

    fn put(&self, login: &str, entry: &UserEntry) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= DN_CACHE_MAX && !map.contains_key(login) {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= DN_CACHE_MAX {
                return;
            }
        }
        map.insert(login.to_owned(), (entry.clone(), Instant::now()));
    }

    fn forget(&self, login: &str) {
        if !self.ttl.is_zero() {
            self.lock().remove(login);
        }
    }
}

impl LdapPool {
    /// `max_idle` search connections and `max_bind_idle` bind connections
    /// kept; DN cache entries live `dn_cache` (zero: no cache).
    pub fn new(max_idle: usize, max_bind_idle: usize, dn_cache: Duration) -> LdapPool {
        LdapPool {
            idle: Mutex::new(Vec::new()),
            binders: Mutex::new(Vec::new()),
            max_idle,
            max_bind_idle,
            // Servers drop idle connections; don't offer one that may be dead.
            max_age: Duration::from_secs(60),
            health: Mutex::new(HostHealth::in_memory()),
            dn_cache: DnCache {
                ttl: dn_cache,
                map: Mutex::new(Default::default()),
            },
        }
    }

    /// The pools `[serve]` asks for.
    pub fn for_serve(serve: &crate::config::ServeConfig) -> LdapPool {
        Self::new(
            serve.ldap_connections,
            serve.ldap_bind_connections,
            serve.dn_cache,
        )
    }

    fn lock_health(&self) -> std::sync::MutexGuard<'_, HostHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A warm service-bound connection to `host`, checked before reuse, if one is idle.
    fn take(&self, host: &Host) -> Option<Warm> {
        take_from(&self.idle, self.max_age, host)
    }

    /// Give a healthy service-bound connection back (dropped when the pool is full).
    fn put(&self, host: &Host, conn: Warm) {
        put_into(&self.idle, self.max_idle, host, conn);
    }

    /// A warm bind-only connection to `host`, if one is idle.
    fn take_binder(&self, host: &Host) -> Option<Warm> {
        take_from(&self.binders, self.max_age, host)
    }

    /// Give a bind-only connection back after a bind the server answered
    /// with success or invalid credentials.
    fn put_binder(&self, host: &Host, conn: Warm) {
        put_into(&self.binders, self.max_bind_idle, host, conn);
    }

    /// Idle search connections right now (for tests and /health).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Idle bind-only connections right now (for tests and /health).
    pub fn idle_bind_count(&self) -> usize {
        self.binders.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// A copy of the failed-host memory.
    pub fn health(&self) -> HostHealth {
        self.lock_health().clone()
    }

    /// Forget every idle connection and cached DN (after a configuration reload).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.binders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.dn_cache.lock().clear();
    }
}

/// Where a request finds its connections and keeps its memory of failed hosts.
#[derive(Clone, Copy)]
pub enum Backend<'a> {
    /// One-shot process (checkpassword): fresh connections, memory in `state_dir`.
    OneShot(&'a Path),
    /// Long-running service: pooled searches, memory shared in-process.
    Pooled(&'a LdapPool),
}

/// Host order, TLS settings and deadline for one request against the directory.
pub struct Directory<'a> {
    cfg: &'a LdapConfig,
    backend: Backend<'a>,
    tls: Option<Arc<ClientConfig>>,
    health: HostHealth,
    deadline: Instant,
    /// The host that gave the last answer (success or a final refusal), for logs.
    pub answered_by: Option<Host>,
    /// A connection [`Directory::preopen`] is opening on another thread.
    opening: Option<Opening>,
}

/// A connection being opened on its own thread while the caller asks the
/// database ([`Directory::preopen`]): the host, and the thread that returns
/// the connection with the TLS settings it loaded.
struct Opening {
    host: Host,
    thread: std::thread::JoinHandle<Opened>,
}

/// What the opening thread returns: the connection, and the TLS settings it
/// loaded (kept for the next host).
type Opened = (Result<LdapConn, Attempt>, Option<Arc<ClientConfig>>);

impl<'a> Directory<'a> {
    /// Prepare a one-shot request that must finish by `deadline`. Reads the host health file.
    pub fn new(cfg: &'a LdapConfig, state_dir: &'a Path, deadline: Instant) -> Directory<'a> {
        Self::with_backend(cfg, Backend::OneShot(state_dir), deadline)
    }

    pub fn with_backend(
        cfg: &'a LdapConfig,
        backend: Backend<'a>,
        deadline: Instant,
    ) -> Directory<'a> {
        if let Backend::OneShot(dir) = backend {
            tls::remember_warnings_in(dir);
        }
        let health = match backend {
            Backend::OneShot(dir) => HostHealth::load(dir),
            // A copy for this request; changes go to the pool's memory as they happen.
            Backend::Pooled(pool) => pool.health(),
        };
        Directory {
            cfg,
            backend,
            tls: None,
            health,
            deadline,
            answered_by: None,
            opening: None,
        }
    }

    /// One-shot: start opening the TCP (and TLS or StartTLS) connection to
    /// the host this request will try first, on another thread, so that it
    /// is ready when the caller has asked the database. Nothing is sent on it
    /// but the TLS handshake (and StartTLS) until [`Directory::find_user`]
    /// uses it; a request decided without the directory drops it unused.
    /// Not done when a host's retry time has come (this request may probe
    /// it first, [`HostHealth::plan_shared`]) or every host failed recently.
    pub fn preopen(&mut self) {
        let Backend::OneShot(_) = self.backend else {
            return;
        };
        let now_ms = unix_now_ms();
        let retry = self.cfg.host_retry;
        if self.opening.is_some() || !self.health.due(&self.cfg.hosts, now_ms, retry).is_empty() {
            return;
        }
        let Some(host) = self
            .health
            .order(&self.cfg.hosts, now_ms, retry)
            .into_iter()
            .next()
            .filter(|h| self.health.is_marked(h, unix_now(), retry).is_none())
        else {
            return;
        };
        let Ok(left) = self.remaining() else {
            return;
        };
        let timeout = left.min(self.cfg.connect_timeout);
        let mode = self.cfg.tls;
        let tls = self.tls.clone();
        let (ca_files, ca_only, verify) = (
            self.cfg.ca_files.clone(),
            self.cfg.ca_only,
            !self.cfg.ignore_ssl_errors,
        );
        let target = host.clone();
        let spawned = std::thread::Builder::new()
            .name("ldap-preopen".into())
            .spawn(move || {
                let tls = match (mode, tls) {
                    (TlsMode::Plain, _) => None,
                    (_, Some(c)) => Some(c),
                    (_, None) => match tls::client_config(&ca_files, ca_only, verify) {
                        Ok((c, _)) => Some(c),
                        Err(e) => return (Err(Attempt::Final(Failure::Temporary(e))), None),
                    },
                };
                (open(mode, tls.clone(), timeout, &target), tls)
            });
        if let Ok(thread) = spawned {
            self.opening = Some(Opening { host, thread });
        }
    }

    /// The connection [`Directory::preopen`] opened to `host`, if it opened
    /// one to that host (another host's is dropped unused).
    fn take_opened(&mut self, host: &Host) -> Option<Result<LdapConn, Attempt>> {
        let opening = self.opening.take()?;
        if &opening.host != host {
            return None;
        }
        // A thread that panicked: open the connection here instead.
        let (conn, tls) = opening.thread.join().ok()?;
        if self.tls.is_none() {
            self.tls = tls;
        }
        Some(conn)
    }

    /// Whether every configured host failed within its retry window (an
    /// outage, as far as this process knows).
    pub fn all_hosts_failed_recently(&self) -> bool {
        let now = unix_now();
        self.cfg
            .hosts
            .iter()
            .all(|h| self.health.is_marked(h, now, self.cfg.host_retry).is_some())
    }

    fn mark_ok(&mut self, host: &Host) {
        self.health.mark_ok(host);
        if let Backend::Pooled(pool) = self.backend {
            pool.lock_health().mark_ok(host);
        }
    }

    fn mark_failed(&mut self, host: &Host) {
        let now = unix_now_ms();
        self.health.mark_failed(host, now);
        if let Backend::Pooled(pool) = self.backend {
            pool.lock_health().mark_failed(host, now);
        }
    }

    fn remaining(&self) -> Result<Duration, Failure> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(Failure::Temporary(
                "login time limit (login_timeout_ms) reached".into(),
            ))
        } else {
            Ok(left)
        }
    }

    fn op_timeout(&self) -> Result<Duration, Failure> {
        Ok(self.remaining()?.min(self.cfg.timeout))
    }

    fn tls_config(&mut self) -> Result<Arc<ClientConfig>, Failure> {
        if let Some(c) = &self.tls {
            return Ok(c.clone());
        }
        let (c, _) = tls::client_config(
            &self.cfg.ca_files,
            self.cfg.ca_only,
            !self.cfg.ignore_ssl_errors,
        )
        .map_err(Failure::Temporary)?;
        self.tls = Some(c.clone());
        Ok(c)
    }

    /// Open a connection to one host in the configured TLS mode.
    pub fn connect(&mut self, host: &Host) -> Result<LdapConn, Attempt> {
        let timeout = self
            .remaining()
            .map_err(Attempt::Final)?
            .min(self.cfg.connect_timeout);
        let tls = match self.cfg.tls {
            TlsMode::Plain => None,
            _ => Some(self.tls_config().map_err(Attempt::Final)?),
        };
        open(self.cfg.tls, tls, timeout, host)
    }

    /// Bind with the service account (or stay anonymous when none is set).
    pub fn service_bind(&self, conn: &mut LdapConn) -> Result<(), Attempt> {
        let Some(dn) = &self.cfg.bind_dn else {
            return Ok(());
        };
        let t = self.op_timeout().map_err(Attempt::Final)?;
        let r = conn
            .with_timeout(t)
            .simple_bind(dn, self.cfg.bind_password.expose())
            .map_err(|e| Attempt::NextHost(explain(&e)))?;
        match r.rc {
            rc::SUCCESS => Ok(()),
            rc::BUSY | rc::UNAVAILABLE => Attempt::next(
                result_failure("service bind", &r),
                "the server is busy or unavailable",
            ),
            rc::INVALID_CREDENTIALS => {
                // AD's reason, when it names one (a locked-out service account, say).
                let why = match ad_data_code(&r.text) {
                    Some(code) if code != "52e" => format!(
                        "{} (Active Directory: data {code})",
                        ad_reason(&code).unwrap_or("refused")
                    ),
                    _ => "invalid credentials".to_owned(),
                };
                Err(Attempt::Final(Failure::Temporary(format!(
                    "service bind as {dn} refused ({why}): check ldap.bind_dn and ldap.bind_password; {SERVICE_LOCKOUT}"
                ))))
            }
            rc::STRONGER_AUTH_REQUIRED | rc::CONFIDENTIALITY_REQUIRED => {
                Err(Attempt::Final(Failure::Temporary(format!(
                    "service bind as {dn}: encryption required (result code {}): {ENCRYPTION_REQUIRED}",
                    r.rc
                ))))
            }
            _ => Err(Attempt::Final(Failure::Temporary(result_failure(
                &format!("service bind as {dn}"),
                &r,
            )))),
        }
    }

    /// Search for the login's entry; exactly one must match.
    fn search(
        &self,
        conn: &mut LdapConn,
        login: &str,
        attrs: &[&str],
        trace: &mut dyn Trace,
    ) -> Result<UserEntry, Attempt> {
        let filter = user_filter(&self.cfg.filter, &self.cfg.username_field, login);
        trace.step(&format!(
            "search: base \"{}\", scope subtree, filter {filter}",
            self.cfg.base_dn
        ));
        let t = self.op_timeout().map_err(Attempt::Final)?;
        let res = conn
            .with_timeout(t)
            .with_search_options(SearchOptions::new().sizelimit(2))
            .search(&self.cfg.base_dn, Scope::Subtree, &filter, attrs.to_vec())
            .map_err(|e| Attempt::NextHost(explain(&e)))?;
        let (entries, result) = (res.0, res.1);
        let entries: Vec<UserEntry> = entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(|e| UserEntry::from_search(SearchEntry::construct(e)))
            .collect();
        match result.rc {
            rc::SUCCESS => {}
            // Two entries came back before the size limit of 2 stopped the search.
            rc::SIZE_LIMIT_EXCEEDED if entries.len() >= 2 => {}
            rc::BUSY | rc::UNAVAILABLE | rc::TIME_LIMIT_EXCEEDED => {
                return Attempt::next(result_failure("search", &result), "the server is busy or unavailable")
            }
            rc::NO_SUCH_OBJECT => {
                return Err(Attempt::Final(Failure::Temporary(format!(
                    "ldap.base_dn \"{}\" does not exist on the server",
                    self.cfg.base_dn
                ))))
            }
            rc::REFERRAL => {
                return Err(Attempt::Final(Failure::Temporary(format!(
                    "ldap.base_dn \"{}\" is not held by this server (referral to {}); referrals are not followed",
                    self.cfg.base_dn,
                    result.refs.join(" ")
                ))))
            }
            _ => return Err(Attempt::Final(Failure::Temporary(result_failure("search", &result)))),
        }
        match entries.len() {
            0 => {
                trace.step("search: no entry");
                Err(Attempt::Final(Failure::UnknownUser))
            }
            1 => {
                let e = entries.into_iter().next().unwrap_or_default();
                trace.step(&format!("search: found {}", e.dn));
                Ok(e)
            }
            n => {
                let dns: Vec<&str> = entries.iter().map(|e| e.dn.as_str()).collect();
                trace.step(&format!("search: {n} or more entries: {}", dns.join(" ; ")));
                Err(Attempt::Final(Failure::Ambiguous(n)))
            }
        }
    }

    /// Bind as the user on this connection (one-shot: the caller then drops it).
    fn user_bind(&self, conn: &mut LdapConn, dn: &str, password: &Secret) -> Result<(), Attempt> {
        check_bind(dn, password)?;
        let t = self.op_timeout().map_err(Attempt::Final)?;
        let r = raw_user_bind(conn, dn, password, t).map_err(|e| Attempt::NextHost(explain(&e)))?;
        judge_bind(&r)
    }

    /// Bind as `dn` on a warm bind-only connection to `host` (a new one when
    /// none is idle, or once more when the warm one turns out closed). The
    /// connection goes back to the pool only when the server answered with
    /// success or invalid credentials; after anything else it is dropped.
    fn pooled_bind(
        &mut self,
        pool: &LdapPool,
        host: &Host,
        dn: &str,
        password: &Secret,
    ) -> Result<ldap3::LdapResult, Attempt> {
        check_bind(dn, password)?;
        let mut reused = pool.take_binder(host);
        loop {
            let was_reused = reused.is_some();
            let mut conn = match reused.take() {
                Some(c) => c,
                None => Warm::new(self.connect(host)?),
            };
            let t = self.op_timeout().map_err(Attempt::Final)?;
            match raw_user_bind(&mut conn.conn, dn, password, t) {
                Ok(r) => {
                    if matches!(r.rc, rc::SUCCESS | rc::INVALID_CREDENTIALS) {
                        pool.put_binder(host, conn);
                    }
                    return Ok(r);
                }
                // A warm connection the server had closed (the bind never
                // reached it): once more on a new one. Not after a timeout:
                // the server may have counted that bind.
                Err(e) if was_reused && !matches!(e, LdapError::Timeout { .. }) => continue,
                Err(e) => return Err(Attempt::NextHost(explain(&e))),
            }
        }
    }

    /// A real user's bind on the bind pool.
    fn pooled_user_bind(
        &mut self,
        pool: &LdapPool,
        host: &Host,
        dn: &str,
        password: &Secret,
        trace: &mut dyn Trace,
    ) -> Result<ldap3::LdapResult, Attempt> {
        let r = self.pooled_bind(pool, host, dn, password)?;
        trace.step(&format!(
            "user bind as {dn} (pooled bind connection): result code {}",
            r.rc
        ));
        Ok(r)
    }

    /// The search found no single entry: bind once as a DN that cannot
    /// exist, with the password given, so that this answer costs the
    /// directory and the caller what a wrong password costs and its timing
    /// tells no one whether the address exists. Its result is ignored (the
    /// search's answer stands); no real account is named, so none counts a
    /// failure (Active Directory's badPwdCount stays as it is). In `serve`,
    /// the whole answer is then padded (`serve`'s `Runtime::equal_time`).
    fn equal_time(
        &mut self,
        conn: Option<&mut LdapConn>,
        host: &Host,
        password: &Secret,
        trace: &mut dyn Trace,
    ) {
        if password.is_empty() {
            return;
        }
        let dn = nobody_dn(&self.cfg.base_dn);
        trace.step(&format!(
            "equal time: a bind as {dn}, which cannot exist, so that the answer takes as long as a wrong password's"
        ));
        let answered = match (conn, self.backend) {
            (Some(conn), _) => match self.op_timeout() {
                Ok(t) => raw_user_bind(conn, &dn, password, t).ok(),
                Err(_) => None,
            },
            (None, Backend::Pooled(pool)) => self.pooled_bind(pool, host, &dn, password).ok(),
            (None, Backend::OneShot(_)) => None,
        };
        if answered.as_ref().is_some_and(|r| r.rc == rc::SUCCESS) {
            crate::log::warn(&format!(
                "host {}: a bind as {dn}, which names no entry, was accepted: the server lets unknown DNs bind",
                host.label()
            ));
        }
    }

    /// Find the login's entry and, when `password` is given, bind as it.
    /// `attrs` are the attributes to read from the entry.
    pub fn find_user(
        &mut self,
        login: &str,
        password: Option<&Secret>,
        attrs: &[&str],
        trace: &mut dyn Trace,
    ) -> Result<Found, Failure> {
        let (entry, host) = self.over_hosts(trace, |d, host, trace| {
            d.try_host(host, login, password, attrs, trace)
        })?;
        Ok(Found { entry, host })
    }

    /// A connection bound as the service account, to the first usable host
    /// (for the sync's paged search).
    pub fn open_bound(&mut self, trace: &mut dyn Trace) -> Result<(LdapConn, Host), Failure> {
        self.over_hosts(trace, |d, host, trace| {
            let mut conn = d.connect(host)?;
            d.service_bind(&mut conn)?;
            trace.step(&format!("host {}: connected and bound", host.label()));
            Ok(conn)
        })
    }

    /// Run `attempt` on each host in health order until one gives a final
    /// answer; remember the hosts that failed.
    fn over_hosts<T>(
        &mut self,
        trace: &mut dyn Trace,
        mut attempt: impl FnMut(&mut Self, &Host, &mut dyn Trace) -> Result<T, Attempt>,
    ) -> Result<(T, Host), Failure> {
        let now = unix_now();
        let now_ms = unix_now_ms();
        let retry = self.cfg.host_retry;
        // A probe lease lasts as long as this request may: a crashed prober
        // holds a host back for one login time limit at most.
        let lease = self.deadline.saturating_duration_since(Instant::now());
        let (order, claimed) = match self.backend {
            Backend::OneShot(dir) => {
                self.health
                    .plan_shared(dir, &self.cfg.hosts, now_ms, retry, lease)
            }
            Backend::Pooled(pool) => pool
                .lock_health()
                .plan(&self.cfg.hosts, now_ms, retry, lease),
        };
        let mut failures: Vec<String> = Vec::new();
        let mut result = None;
        for host in &order {
            if claimed.contains(host) {
                trace.step(&format!(
                    "host {}: failed before; its retry time has come and this request probes it (the others keep it last meanwhile)",
                    host.label()
                ));
            } else if let Some(t) = self.health.is_marked(host, now, retry) {
                trace.step(&format!(
                    "host {}: failed {}s ago, tried after the others",
                    host.label(),
                    now.saturating_sub(t)
                ));
            }
            trace.step(&format!(
                "host {}: connecting ({})",
                host.label(),
                self.cfg.tls
            ));
            match attempt(self, host, trace) {
                Ok(v) => {
                    self.mark_ok(host);
                    result = Some(Ok((v, host.clone())));
                    break;
                }
                Err(Attempt::Final(f)) => {
                    // The server answered: it is alive.
                    if !matches!(f, Failure::Temporary(_)) {
                        self.mark_ok(host);
                    }
                    self.answered_by = Some(host.clone());
                    result = Some(Err(f));
                    break;
                }
                Err(Attempt::NextHost(hf)) => {
                    trace.step(&format!(
                        "host {}: FAILED: {} -> {}",
                        host.label(),
                        hf.reason,
                        hf.hint
                    ));
                    self.mark_failed(host);
                    failures.push(format!("{}: {}", host.label(), hf.reason));
                    if self.remaining().is_err() {
                        break;
                    }
                }
            }
        }
        if let Backend::OneShot(dir) = self.backend {
            self.health.save(dir);
        }
        result.unwrap_or_else(|| {
            let what = if self.remaining().is_err() {
                "login time limit (login_timeout_ms) reached; tried"
            } else {
                "no directory host usable"
            };
            Err(Failure::Temporary(format!(
                "{what}: {}",
                failures.join("; ")
            )))
        })
    }

    fn try_host(
        &mut self,
        host: &Host,
        login: &str,
        password: Option<&Secret>,
        attrs: &[&str],
        trace: &mut dyn Trace,
    ) -> Result<UserEntry, Attempt> {
        if let Backend::Pooled(pool) = self.backend {
            return self.try_host_pooled(pool, host, login, password, attrs, trace);
        }
        let mut conn = match self.take_opened(host) {
            Some(opened) => {
                let conn = opened?;
                trace.step(&format!(
                    "host {}: connected (opened while the database was asked)",
                    host.label()
                ));
                conn
            }
            None => {
                let conn = self.connect(host)?;
                trace.step(&format!("host {}: connected", host.label()));
                conn
            }
        };
        self.service_bind(&mut conn)?;
        trace.step(&match &self.cfg.bind_dn {
            Some(dn) => format!("service bind as {dn}: ok"),
            None => "no bind_dn: searching anonymously".to_owned(),
        });
        let entry = match self.search(&mut conn, login, attrs, trace) {
            Err(Attempt::Final(f @ (Failure::UnknownUser | Failure::Ambiguous(_)))) => {
                if let Some(pw) = password {
                    self.equal_time(Some(&mut conn), host, pw, trace);
                }
                let _ = conn.unbind();
                return Err(Attempt::Final(f));
            }
            other => other?,
        };
        if let Some(pw) = password {
            // Same connection, then dropped: saves a handshake in a one-shot process.
            self.user_bind(&mut conn, &entry.dn, pw)?;
            trace.step(&format!("user bind as {}: ok", entry.dn));
        }
        let _ = conn.unbind();
        Ok(entry)
    }

    /// Search on a warm service-bound connection, then bind as the user on a
    /// warm bind-only connection. With the DN cache, a cached entry is bound
    /// at once ([`Directory::bind_cached`]).
    fn try_host_pooled(
        &mut self,
        pool: &LdapPool,
        host: &Host,
        login: &str,
        password: Option<&Secret>,
        attrs: &[&str],
        trace: &mut dyn Trace,
    ) -> Result<UserEntry, Attempt> {
        let Some(pw) = password else {
            return self.pooled_search(pool, host, login, attrs, trace);
        };
        if let Some(cached) = pool.dn_cache.get(login) {
            return self.bind_cached(pool, host, login, cached, pw, attrs, trace);
        }
        let entry = match self.pooled_search(pool, host, login, attrs, trace) {
            Err(Attempt::Final(f @ (Failure::UnknownUser | Failure::Ambiguous(_)))) => {
                self.equal_time(None, host, pw, trace);
                return Err(Attempt::Final(f));
            }
            other => other?,
        };
        pool.dn_cache.put(login, &entry);
        let r = self.pooled_user_bind(pool, host, &entry.dn, pw, trace)?;
        judge_bind(&r)?;
        Ok(entry)
    }

    /// Bind as a cached entry's DN. Refused as invalid credentials, the
    /// entry may have moved: search once more, and bind again only when the
    /// DN changed, so one attempt never makes two failed binds as one DN.
    #[allow(clippy::too_many_arguments)]
    fn bind_cached(
        &mut self,
        pool: &LdapPool,
        host: &Host,
        login: &str,
        cached: UserEntry,
        pw: &Secret,
        attrs: &[&str],
        trace: &mut dyn Trace,
    ) -> Result<UserEntry, Attempt> {
        trace.step(&format!("DN cache: {login} -> {}", cached.dn));
        let r = self.pooled_user_bind(pool, host, &cached.dn, pw, trace)?;
        if r.rc != rc::INVALID_CREDENTIALS {
            judge_bind(&r)?;
            return Ok(cached);
        }
        trace.step("cached DN refused: searching again, in case the entry moved");
        let fresh = match self.pooled_search(pool, host, login, attrs, trace) {
            Err(Attempt::Final(f)) if !matches!(f, Failure::Temporary(_)) => {
                pool.dn_cache.forget(login);
                return Err(Attempt::Final(f));
            }
            other => other?,
        };
        pool.dn_cache.put(login, &fresh);
        if fresh.dn.eq_ignore_ascii_case(&cached.dn) {
            // Same DN: the refusal stands, no second bind.
            return judge_bind(&r).map(|()| fresh);
        }
        let r = self.pooled_user_bind(pool, host, &fresh.dn, pw, trace)?;
        judge_bind(&r)?;
        Ok(fresh)
    }

    /// Search on a warm service-bound connection (replaced once if it turns
    /// out dead); the connection goes back to the pool unless it failed.
    fn pooled_search(
        &mut self,
        pool: &LdapPool,
        host: &Host,
        login: &str,
        attrs: &[&str],
        trace: &mut dyn Trace,
    ) -> Result<UserEntry, Attempt> {
        let mut reused = pool.take(host);
        loop {
            let was_reused = reused.is_some();
            let mut conn = match reused.take() {
                Some(c) => c,
                None => {
                    let mut c = self.connect(host)?;
                    self.service_bind(&mut c)?;
                    Warm::new(c)
                }
            };
            match self.search(&mut conn.conn, login, attrs, trace) {
                Ok(e) => {
                    pool.put(host, conn);
                    return Ok(e);
                }
                // A warm connection the server had closed: try once more on a new one.
                Err(Attempt::NextHost(_)) if was_reused => continue,
                Err(Attempt::Final(f)) if !matches!(f, Failure::Temporary(_)) => {
                    pool.put(host, conn);
                    return Err(Attempt::Final(f));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Open a connection to `host` in TLS mode `mode` (`tls`: the TLS settings,
/// unless plain), within `timeout`.
///
/// The TCP connection is ours, with `TCP_NODELAY` (ldap3 0.12 connects with
/// Nagle's algorithm on): after the TLS handshake the client writes its
/// `Finished` and then the bind request; with Nagle the bind waited for the
/// server's ACK of `Finished`, which Linux delays by up to 40 ms when it has
/// nothing to send. That stall was 43 of the 51 ms of a one-shot LDAPS login
/// (`contrib/bench/profile.sh`, README "Profile of a one-shot login").
fn open(
    mode: TlsMode,
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
    host: &Host,
) -> Result<LdapConn, Attempt> {
    let started = Instant::now();
    let stream = tcp_connect(host, timeout)?;
    let left = timeout.saturating_sub(started.elapsed());
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(left.max(Duration::from_millis(1)))
        .set_std_stream(ldap3::StdStream::Tcp(stream));
    if let Some(c) = tls {
        settings = settings.set_config(c);
    }
    if mode == TlsMode::StartTls {
        settings = settings.set_starttls(true);
    }
    LdapConn::with_settings(settings, &host.url(mode)).map_err(|e| Attempt::NextHost(explain(&e)))
}

/// A TCP connection to the first of `host`'s addresses that accepts within
/// what is left of `timeout`, with `TCP_NODELAY` set.
fn tcp_connect(host: &Host, timeout: Duration) -> Result<std::net::TcpStream, Attempt> {
    let fail = |e: std::io::Error| Attempt::NextHost(explain(&LdapError::from(e)));
    let deadline = Instant::now() + timeout;
    let mut last = None;
    for addr in resolve(host, timeout).map_err(fail)? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match std::net::TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                // Best effort: a socket that refuses it still works, only slower.
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(fail(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out")
    })))
}

/// `host`'s addresses: an IP address as it is, a name through the system's
/// resolver on a thread of its own, waited for at most `timeout` (a resolver
/// that hangs must not hold a login longer than a silent server would).
fn resolve(host: &Host, timeout: Duration) -> std::io::Result<Vec<std::net::SocketAddr>> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = host.name.parse::<std::net::IpAddr>() {
        return Ok(vec![std::net::SocketAddr::new(ip, host.port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (name, port) = (host.name.clone(), host.port);
    std::thread::Builder::new()
        .name("ldap-resolve".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Vec::from_iter));
        })?;
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("looking up {} timed out", host.name),
        ))
    })
}

/// Refuse to bind with what proves nothing.
fn check_bind(dn: &str, password: &Secret) -> Result<(), Attempt> {
    if password.is_empty() {
        // An empty password makes an "unauthenticated" bind that many servers accept.
        return Err(Attempt::Final(Failure::BadRequest("empty password".into())));
    }
    if dn.trim().is_empty() {
        // A simple bind with an empty name is anonymous (RFC 4513 5.1.2),
        // whatever the password: it proves nothing.
        return Err(Attempt::Final(Failure::Temporary(
            "the directory returned an entry with an empty DN; refusing to bind as it".into(),
        )));
    }
    Ok(())
}

/// One simple bind as `dn`, asking for OpenLDAP's password-policy reason
/// (not critical: AD and servers without ppolicy ignore it).
fn raw_user_bind(
    conn: &mut LdapConn,
    dn: &str,
    password: &Secret,
    timeout: Duration,
) -> Result<ldap3::LdapResult, LdapError> {
    conn.with_timeout(timeout)
        .with_controls(vec![RawControl {
            ctype: PPOLICY_OID.to_owned(),
            crit: false,
            val: None,
        }])
        .simple_bind(dn, password.expose())
}

/// A user bind's answer as the login's outcome.
fn judge_bind(r: &ldap3::LdapResult) -> Result<(), Attempt> {
    match r.rc {
        rc::SUCCESS => Ok(()),
        rc::INVALID_CREDENTIALS => {
            let policy = r
                .ctrls
                .iter()
                .find(|c| c.1.ctype == PPOLICY_OID)
                .and_then(|c| c.1.val.as_deref())
                .and_then(ppolicy_error);
            match policy.and_then(ppolicy_reason) {
                Some(why) => Err(Attempt::Final(Failure::Denied(format!(
                    "{why} (password policy)"
                )))),
                None => Err(Attempt::Final(refusal(&r.text))),
            }
        }
        rc::STRONGER_AUTH_REQUIRED | rc::CONFIDENTIALITY_REQUIRED => {
            Err(Attempt::Final(Failure::Temporary(format!(
                "user bind: encryption required (result code {}): {ENCRYPTION_REQUIRED}",
                r.rc
            ))))
        }
        rc::CONSTRAINT_VIOLATION | rc::INSUFFICIENT_ACCESS | rc::UNWILLING_TO_PERFORM => {
            Err(Attempt::Final(Failure::Denied(bind_result(
                "the directory refused the bind",
                r,
            ))))
        }
        rc::BUSY | rc::UNAVAILABLE => Attempt::next(
            bind_result("user bind", r),
            "the server is busy or unavailable",
        ),
        _ => Err(Attempt::Final(Failure::Temporary(bind_result(
            "user bind",
            r,
        )))),
    }
}

/// A DN that no directory holds: a random name under the base DN, drawn once
/// per process (a DN, never a user name: AD would match a bare name or a UPN
/// against its accounts).
pub fn nobody_dn(base_dn: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let tag = TAG.get_or_init(|| {
        // RandomState is seeded from the OS's random source.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(unix_now_ms());
        h.finish()
    });
    if base_dn.trim().is_empty() {
        format!("cn=no-such-entry-{tag:016x}")
    } else {
        format!("cn=no-such-entry-{tag:016x},{base_dn}")
    }
}

impl Attempt {
    fn next<T>(reason: String, hint: &'static str) -> Result<T, Attempt> {
        Err(Attempt::NextHost(HostFailure { reason, hint }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection to the directory is opened without Nagle's algorithm
    /// (the LDAPS stall of issue 15), by IP address and by name; a refused
    /// port names the fix.
    #[test]
    fn tcp_connect_sets_nodelay_and_explains_a_refusal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for name in ["127.0.0.1", "localhost"] {
            let host = Host {
                name: name.into(),
                port,
            };
            let s = tcp_connect(&host, Duration::from_secs(2)).unwrap();
            assert!(s.nodelay().unwrap(), "{name}: TCP_NODELAY not set");
        }
        drop(listener);
        let host = Host {
            name: "127.0.0.1".into(),
            port,
        };
        match tcp_connect(&host, Duration::from_secs(2)) {
            Err(Attempt::NextHost(f)) => assert!(f.hint.contains("nothing listens"), "{f:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn filter_building_escapes_the_login() {
        let and = FilterTemplate::And { extra: None };
        assert_eq!(user_filter(&and, "mail", "a@b.c"), "(mail=a@b.c)");
        assert_eq!(user_filter(&and, "mail", "*"), "(mail=\\2a)");
        assert_eq!(
            user_filter(&and, "uid", "x)(uid=*"),
            "(uid=x\\29\\28uid=\\2a)"
        );
        assert_eq!(user_filter(&and, "uid", "a\\b"), "(uid=a\\5cb)");
        assert_eq!(user_filter(&and, "uid", "a\0b"), "(uid=a\\00b)");
        let extra = FilterTemplate::And {
            extra: Some("(objectClass=person)".into()),
        };
        assert_eq!(
            user_filter(&extra, "mail", "x"),
            "(&(objectClass=person)(mail=x))"
        );
        let ph = FilterTemplate::Placeholder("(|(uid=%u)(mail=%s))".into());
        assert_eq!(user_filter(&ph, "mail", "j*"), "(|(uid=j\\2a)(mail=j\\2a))");
        // A placeholder inside the login is not expanded again.
        assert_eq!(user_filter(&ph, "mail", "a%sb"), "(|(uid=a%sb)(mail=a%sb))");
        assert_eq!(user_filter(&ph, "mail", "%u"), "(|(uid=%u)(mail=%u))");
        let odd = FilterTemplate::Placeholder("(&(x=100%)(uid=%u)(y=%%))".into());
        assert_eq!(user_filter(&odd, "mail", "j"), "(&(x=100%)(uid=j)(y=%%))");
    }

    #[test]
    fn active_directory_refusal_reasons() {
        let ad = "80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 775, v3839";
        assert_eq!(ad_data_code(ad).as_deref(), Some("775"));
        let samba = "0000052E: AcceptSecurityContext error, data 52e, v1db1";
        assert_eq!(ad_data_code(samba).as_deref(), Some("52e"));
        assert_eq!(ad_data_code("invalid credentials"), None);
        assert_eq!(ad_data_code("AcceptSecurityContext error, data , v1"), None);
        assert_eq!(refusal(samba), Failure::WrongPassword);
        assert_eq!(refusal(""), Failure::WrongPassword);
        assert_eq!(
            refusal(ad),
            Failure::Denied("account locked out (Active Directory: data 775)".into())
        );
        assert_eq!(
            refusal("AcceptSecurityContext error, data 533, v1"),
            Failure::NoLogin(
                Reason::AccountDisabled,
                "account disabled (Active Directory: data 533)".into()
            )
        );
        for (code, reason) in [
            ("530", Reason::LogonHours),
            ("531", Reason::Workstation),
            ("532", Reason::PasswordExpired),
            ("701", Reason::AccountExpired),
            ("773", Reason::MustChangePassword),
        ] {
            let f = refusal(&format!("AcceptSecurityContext error, data {code}, v1"));
            assert!(
                matches!(f, Failure::NoLogin(r, _) if r == reason),
                "{code}: {f:?}"
            );
        }
        // No such user: a plain refusal.
        assert!(matches!(
            refusal("AcceptSecurityContext error, data 525, v1"),
            Failure::Denied(_)
        ));
        // An unknown code is named, never the server's text.
        assert_eq!(
            refusal("x: AcceptSecurityContext error, data 9ab, secret stuff"),
            Failure::Denied("the directory refused the bind (Active Directory: data 9ab)".into())
        );
    }

    #[test]
    fn password_policy_response() {
        // error: accountLocked(1), no warning.
        assert_eq!(ppolicy_error(&[0x30, 0x03, 0x81, 0x01, 0x01]), Some(1));
        // warning timeBeforeExpiration 300, then error passwordExpired(0).
        assert_eq!(
            ppolicy_error(&[0x30, 0x09, 0xa0, 0x04, 0x80, 0x02, 0x01, 0x2c, 0x81, 0x01, 0x00]),
            Some(0)
        );
        assert_eq!(ppolicy_error(&[0x30, 0x00]), None);
        assert_eq!(ppolicy_error(&[0x30, 0x05, 0x81, 0x01]), None, "cut short");
        assert_eq!(ppolicy_error(&[]), None);
        assert_eq!(ppolicy_reason(1), Some("account locked out"));
        assert_eq!(ppolicy_reason(8), None);
    }

    #[test]
    fn entry_attribute_names_ignore_case() {
        let mut attrs = std::collections::HashMap::new();
        attrs.insert(
            "otherMailbox".to_owned(),
            vec!["a".to_owned(), "b".to_owned()],
        );
        let e = UserEntry::from_search(SearchEntry {
            dn: "uid=x".into(),
            attrs,
            bin_attrs: Default::default(),
        });
        assert_eq!(e.values("othermailbox"), ["a", "b"]);
        assert_eq!(e.values("OTHERMAILBOX"), ["a", "b"]);
        assert_eq!(e.first("otherMailbox"), Some("a"));
        assert!(e.values("mail").is_empty());
    }
}
