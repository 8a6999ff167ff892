//! `serve`: a long-running auth service for Dovecot 2.4 / mailcow's Lua
//! passdb (HTTP/JSON) and for Postfix through Cyrus saslauthd's socket
//! protocol. Every request goes through [`crate::auth::decide`], the same
//! decision `checkpassword` makes, with warm LDAP and database connections.
//!
//! Threads: a small async runtime (tokio, one thread) that accepts and reads
//! every connection (HTTP through hyper, the saslauthd socket) under
//! absolute deadlines and connection caps; per front end a fixed pool of
//! `serve.workers` decision threads (`pool`) that a request takes only once
//! it is complete, so neither slow clients nor one front end can starve the
//! other; the signal handling on the main thread; and (with `settings_from_database`) one thread
//! that reads mailcow's `identity_provider` rows again every
//! `settings_refresh_seconds` and applies any change, so serve follows mailcow's
//! UI as mailcow's PHP does. SIGTERM/SIGINT drain what was accepted and exit 0;
//! SIGHUP reloads the configuration. A bad configuration or unreadable rows are
//! reported and the last good settings kept.

pub mod http;
pub mod metrics;
mod net;
mod pool;
pub mod saslauthd;
mod strict;

use crate::auth::{self, Accepted, Decision, Request};
use crate::config::Config;
use crate::db_slot::StoreSource;
use crate::directory::{Backend, LdapPool, Silent};
use crate::log;
use crate::mailcow::{self, ServeSettings, Store};
use crate::outcome::Failure;
use metrics::{Front, Metrics};
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A pooled database connection idle longer than this is pinged before reuse.
const DB_PING_AFTER: Duration = Duration::from_secs(10);

/// Everything a request needs; replaced whole on SIGHUP.
pub struct Runtime {
    pub cfg: Config,
    pub ldap: LdapPool,
    db: Mutex<DbPool>,
    db_free: Condvar,
    /// mailcow's Identity Provider, when its UI has switched LDAP off.
    pub provider_off: Option<String>,
    /// The last connect or ping of the database: `None` before the first.
    db_state: Mutex<Option<bool>>,
    /// Requests that waited for a database connection, and the nanoseconds in all.
    db_waits: AtomicU64,
    db_wait_nanos: AtomicU64,
    /// How long recent wrong passwords took, which other refusals are padded to.
    refusals: Mutex<RefusalTimes>,
}

/// How many wrong-password logins the padding of other refusals looks back on.
const REFUSALS_KEPT: usize = 32;
/// A refusal's answer is never padded by more than this.
const MAX_PAD: Duration = Duration::from_millis(500);

/// How long the latest logins refused for a wrong password took, whole.
#[derive(Default)]
struct RefusalTimes {
    ring: Vec<Duration>,
    next: usize,
}

impl RefusalTimes {
    fn record(&mut self, d: Duration) {
        if self.ring.len() < REFUSALS_KEPT {
            self.ring.push(d);
        } else {
            self.ring[self.next] = d;
        }
        self.next = (self.next + 1) % REFUSALS_KEPT;
    }

    /// Their median, when any was seen.
    fn median(&self) -> Option<Duration> {
        let mut v = self.ring.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }

    /// How long a refusal that took `took` waits before its answer: up to
    /// the median (at most [`MAX_PAD`] and the time `left`); one already
    /// slower (a mailcow-SQL hash) waits nothing.
    fn pad(&self, took: Duration, left: Duration) -> Duration {
        let typical = self.median().unwrap_or_default();
        typical.saturating_sub(took).min(MAX_PAD).min(left)
    }
}

/// The database connections of one runtime: at most `serve.db_connections`
/// open at once, idle or in use. A request holds one only while it reads or
/// writes, never while the directory answers.
#[derive(Default)]
struct DbPool {
    idle: Vec<(Store, Instant)>,
    open: usize,
}

impl Runtime {
    pub fn new(cfg: Config, provider_off: Option<String>) -> Runtime {
        let ldap = LdapPool::for_serve(&cfg.serve);
        Runtime {
            cfg,
            ldap,
            db: Mutex::new(DbPool::default()),
            db_free: Condvar::new(),
            provider_off,
            db_state: Mutex::new(None),
            db_waits: AtomicU64::new(0),
            db_wait_nanos: AtomicU64::new(0),
            refusals: Mutex::new(RefusalTimes::default()),
        }
    }

    fn note_db(&self, ok: bool) {
        *self.db_state.lock().unwrap_or_else(|p| p.into_inner()) = Some(ok);
    }

    /// The database as the pool last saw it (no connection is made):
    /// "ok", "failing", "not used yet" or "not configured".
    pub fn database_state(&self) -> &'static str {
        if self.cfg.database.is_none() {
            return "not configured";
        }
        match *self.db_state.lock().unwrap_or_else(|p| p.into_inner()) {
            None => "not used yet",
            Some(true) => "ok",
            Some(false) => "failing",
        }
    }

    fn lock_db(&self) -> std::sync::MutexGuard<'_, DbPool> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection: an idle one, a new one while fewer than
    /// `serve.db_connections` are open, else the next one given back before `deadline`.
    fn take_store(&self, deadline: Instant) -> Result<Store, Failure> {
        let Some(db) = &self.cfg.database else {
            return Err(Failure::Temporary("no [database] configured".into()));
        };
        let max = self.cfg.serve.db_connections;
        let mut pool = self.lock_db();
        let mut waited: Option<Instant> = None;
        let note_wait = |since: Option<Instant>| {
            if let Some(t) = since {
                self.db_waits.fetch_add(1, Ordering::Relaxed);
                let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.db_wait_nanos.fetch_add(nanos, Ordering::Relaxed);
            }
        };
        loop {
            if let Some((mut store, since)) = pool.idle.pop() {
                drop(pool);
                if since.elapsed() < DB_PING_AFTER || store.ping().is_ok() {
                    note_wait(waited);
                    return Ok(store);
                }
                drop(store);
                self.forget_store();
                pool = self.lock_db();
                continue;
            }
            if pool.open < max {
                pool.open += 1;
                drop(pool);
                note_wait(waited);
                let store = Store::connect(db, deadline).inspect_err(|_| self.forget_store());
                self.note_db(store.is_ok());
                return store;
            }
            waited.get_or_insert_with(Instant::now);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                note_wait(waited);
                return Err(Failure::Temporary(format!(
                    "all {max} database connections (serve.db_connections) stayed busy until the login time limit"
                )));
            }
            pool = self
                .db_free
                .wait_timeout(pool, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Give a healthy connection back.
    fn put_store(&self, store: Store) {
        self.lock_db().idle.push((store, Instant::now()));
        self.db_free.notify_one();
    }

    /// A connection taken was closed (or never opened): room for another.
    fn forget_store(&self) {
        let mut pool = self.lock_db();
        pool.open = pool.open.saturating_sub(1);
        drop(pool);
        self.db_free.notify_one();
    }

    /// Database connections open right now, idle or in use (for tests and /health).
    pub fn db_open(&self) -> usize {
        self.lock_db().open
    }

    /// Decide one request with pooled connections.
    pub fn decide(&self, req: &Request) -> Decision {
        if let Some(source) = &self.provider_off {
            // Not ours: Dovecot goes on to mailcow's passdbs, as mailcow's UI says.
            return Decision {
                result: Err(Failure::NotOurs(format!(
                    "mailcow's Identity Provider is {}, not LDAP",
                    provider_name(source)
                ))),
                host: None,
                entry: None,
            };
        }
        let started = Instant::now();
        let deadline = started + self.cfg.login_timeout;
        let mut lease = Lease {
            rt: self,
            held: None,
        };
        let d = auth::decide(
            &self.cfg,
            Backend::Pooled(&self.ldap),
            &mut lease,
            req,
            deadline,
            &mut Silent,
        );
        if let Some(store) = lease.held.take() {
            // After a temporary failure the connection may be the problem: drop it.
            if matches!(d.result, Err(Failure::Temporary(_))) {
                drop(store);
                self.forget_store();
            } else {
                self.put_store(store);
            }
        }
        self.equal_time(&d.result, started, deadline);
        d
    }

    /// Refusals take as long as a wrong password: a login refused as an
    /// unknown user (no entry, or no mailbox without provisioning) or by
    /// mailcow's checks before any bind (inactive mailbox or domain, a
    /// service not allowed) is answered no sooner than the median of the
    /// latest wrong passwords, so the answer time tells no one which
    /// addresses exist or what state their mailbox is in. The wait is on
    /// this request's decision thread; the directory is not asked for it.
    fn equal_time(&self, result: &Result<Accepted, Failure>, started: Instant, deadline: Instant) {
        let took = started.elapsed();
        let refusals = || self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Err(Failure::WrongPassword) => refusals().record(took),
            Err(Failure::UnknownUser | Failure::Ambiguous(_) | Failure::Denied(_)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let pad = refusals().pad(took, left);
                if !pad.is_zero() {
                    std::thread::sleep(pad);
                }
            }
            _ => {}
        }
    }

    /// The pools as a scrape sees them.
    fn pool_metrics(&self, m: &mut metrics::Pools) {
        m.ldap_idle = self.ldap.idle_count();
        m.ldap_max_idle = self.cfg.serve.ldap_connections;
        m.ldap_bind_idle = self.ldap.idle_bind_count();
        m.ldap_bind_max_idle = self.cfg.serve.ldap_bind_connections;
        m.db_open = self.db_open();
        m.db_max = self.cfg.serve.db_connections;
        m.db_waits = self.db_waits.load(Ordering::Relaxed);
        m.db_wait_seconds = self.db_wait_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let now = crate::health::unix_now();
        let memory = self.ldap.health();
        m.hosts = self
            .cfg
            .ldap
            .hosts
            .iter()
            .map(|h| {
                let marked = memory.is_marked(h, now, self.cfg.ldap.host_retry);
                (h.label(), marked.is_none())
            })
            .collect();
    }
}

/// One request's use of the runtime's database connections.
struct Lease<'a> {
    rt: &'a Runtime,
    held: Option<Store>,
}

impl StoreSource for Lease<'_> {
    fn configured(&self) -> bool {
        self.rt.cfg.database.is_some()
    }

    fn get(&mut self, deadline: Instant) -> Result<Option<&mut Store>, Failure> {
        if !self.configured() {
            return Ok(None);
        }
        if self.held.is_none() {
            self.held = Some(self.rt.take_store(deadline)?);
        }
        Ok(self.held.as_mut())
    }

    fn release(&mut self, _slow: bool) {
        if let Some(store) = self.held.take() {
            self.rt.put_store(store);
        }
    }
}

impl Drop for Lease<'_> {
    /// Still holding a connection here means the decision did not end
    /// normally (a panic): close it and make room for another.
    fn drop(&mut self) {
        if let Some(store) = self.held.take() {
            drop(store);
            self.rt.forget_store();
        }
    }
}

/// Debug builds only: a login equal to `$MAILCOW_LDAP_AUTH_TEST_PANIC_LOGIN`
/// panics on its decision thread, so the suite can prove a panic is
/// contained. Release builds (the shipped binary) have no such path.
#[cfg(debug_assertions)]
fn test_panic(login: &str) {
    static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var("MAILCOW_LDAP_AUTH_TEST_PANIC_LOGIN").ok());
    if wanted
        .as_deref()
        .is_some_and(|w| !w.is_empty() && w == login)
    {
        panic!("forced panic for a test (MAILCOW_LDAP_AUTH_TEST_PANIC_LOGIN)");
    }
}

#[cfg(not(debug_assertions))]
fn test_panic(_login: &str) {}

fn provider_name(source: &str) -> String {
    if source.is_empty() {
        "not set".into()
    } else {
        format!("\"{source}\"")
    }
}

/// The shared, swappable runtime.
pub struct Shared {
    current: RwLock<Arc<Runtime>>,
    config_path: PathBuf,
    /// The `identity_provider` rows the current runtime was made from.
    rows: Mutex<Option<Vec<(String, String)>>>,
    /// Rows that changed but could not be used: not tried again until they change.
    bad_rows: Mutex<Option<Vec<(String, String)>>>,
    /// Whether the last re-read of the rows failed (said once, until it works).
    refresh_failing: AtomicBool,
}

impl Shared {
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Load the configuration again; keep the old one if the new one is bad.
    pub fn reload(&self) -> Result<(), String> {
        let settings =
            mailcow::load_serve_config(&self.config_path, Instant::now() + Duration::from_secs(10))
                .map_err(|f| f.to_string())?;
        self.install(settings);
        Ok(())
    }

    fn new(settings: ServeSettings, config_path: &Path) -> Shared {
        log_provider(None, settings.provider_off.as_deref());
        Shared {
            current: RwLock::new(Arc::new(Runtime::new(settings.cfg, settings.provider_off))),
            config_path: config_path.to_owned(),
            rows: Mutex::new(settings.rows),
            bad_rows: Mutex::new(None),
            refresh_failing: AtomicBool::new(false),
        }
    }

    /// Make `settings` the current runtime (requests in flight finish on the old one).
    fn install(&self, settings: ServeSettings) {
        let ServeSettings {
            cfg,
            rows,
            provider_off,
        } = settings;
        let old = self.runtime();
        if cfg.serve.http_listen != old.cfg.serve.http_listen
            || cfg.serve.saslauthd_socket != old.cfg.serve.saslauthd_socket
            || cfg.serve.workers != old.cfg.serve.workers
        {
            log::warn("serve: listeners and workers keep their old settings until a restart");
        }
        if old.provider_off != provider_off {
            log_provider(Some(old.provider_off.as_deref()), provider_off.as_deref());
        }
        *self.rows.lock().unwrap_or_else(|p| p.into_inner()) = rows;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Runtime::new(cfg, provider_off));
    }

    /// One look at mailcow's `identity_provider` rows: apply them if they
    /// changed. A failed read keeps the current settings and is said once.
    fn refresh(&self) {
        let rt = self.runtime();
        let Some(db) = rt
            .cfg
            .database
            .as_ref()
            .filter(|_| rt.cfg.settings_from_database)
        else {
            return;
        };
        let rows =
            match mailcow::read_identity_provider(db, Instant::now() + Duration::from_secs(5)) {
                Ok(rows) => rows,
                Err(f) => {
                    if !self.refresh_failing.swap(true, Ordering::SeqCst) {
                        log::warn(&format!(
                            "serve: cannot read mailcow's Identity Provider settings again ({f}): \
                         keeping the last good ones"
                        ));
                    }
                    return;
                }
            };
        if self.refresh_failing.swap(false, Ordering::SeqCst) {
            log::info("serve: mailcow's Identity Provider settings can be read again");
        }
        let same = |m: &Mutex<Option<Vec<(String, String)>>>| {
            m.lock().unwrap_or_else(|p| p.into_inner()).as_ref() == Some(&rows)
        };
        if same(&self.rows) || same(&self.bad_rows) {
            return;
        }
        match mailcow::load_serve_config(
            &self.config_path,
            Instant::now() + Duration::from_secs(10),
        ) {
            Ok(settings) => {
                self.install(settings);
                *self.bad_rows.lock().unwrap_or_else(|p| p.into_inner()) = None;
                log::info("serve: mailcow's Identity Provider settings changed: now in effect");
            }
            Err(f) => {
                log::error(&format!(
                    "serve: mailcow's Identity Provider settings changed but cannot be used ({f}): \
                     keeping the last good ones"
                ));
                *self.bad_rows.lock().unwrap_or_else(|p| p.into_inner()) = Some(rows);
            }
        }
    }
}

/// Say when serve starts or stops answering for LDAP because of mailcow's UI.
fn log_provider(old: Option<Option<&str>>, new: Option<&str>) {
    match (old, new) {
        (_, Some(source)) => log::warn(&format!(
            "serve: mailcow's Identity Provider is {}, not LDAP: every login is answered \
             \"not ours\" (401) until it is LDAP again",
            provider_name(source)
        )),
        (Some(Some(_)), None) => log::info("serve: mailcow's Identity Provider is LDAP again"),
        _ => {}
    }
}

/// Every `settings_refresh` (read from the current runtime, so a reload can
/// change it), [`Shared::refresh`]; ends when `stop` is dropped.
fn spawn_refresher(shared: Arc<Shared>, stop: mpsc::Receiver<()>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || loop {
        let every = shared.runtime().cfg.settings_refresh;
        match stop.recv_timeout(every.unwrap_or(Duration::from_secs(1))) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if every.is_some() {
            shared.refresh();
        }
    })
}

/// Tell systemd (Type=notify) about our state, if it is listening.
fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let bytes = path.as_encoded_bytes();
    let _ = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
    };
}

/// Bind the HTTP listener. `[::]:P` takes IPv4 and IPv6 alike (mailcow's network
/// is dual-stack); where the host or container has no IPv6 at all, it falls back
/// to `0.0.0.0:P` and says so.
fn bind_http(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(addr) {
        Err(e)
            if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED
                && (e.raw_os_error() == Some(libc::EAFNOSUPPORT)
                    || e.kind() == std::io::ErrorKind::AddrNotAvailable) =>
        {
            let v4 = std::net::SocketAddr::from(([0, 0, 0, 0], addr.port()));
            log::warn(&format!(
                "serve: cannot listen on {addr} ({e}: no IPv6 here?): listening on {v4} instead"
            ));
            TcpListener::bind(v4)
        }
        other => other,
    }
}

/// Bind the saslauthd socket: replace a stale socket file (never another kind
/// of file), then apply mode and owner.
fn bind_unix(cfg: &Config, path: &Path) -> Result<UnixListener, String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket: refusing to replace it",
                path.display()
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{} is in use by another process (is saslauthd running?)",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let l = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.serve.socket_mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    let uid = cfg
        .serve
        .socket_owner
        .as_deref()
        .map(|u| lookup_id("/etc/passwd", u))
        .transpose()?;
    let gid = cfg
        .serve
        .socket_group
        .as_deref()
        .map(|g| lookup_id("/etc/group", g))
        .transpose()?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid)
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(l)
}

/// A user or group id by name (or number) from a passwd-style file.
fn lookup_id(file: &str, name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let (n, _, id) = (f.next()?, f.next()?, f.next()?);
            (n == name).then(|| id.parse().ok()).flatten()
        })
        .next()
        .ok_or_else(|| format!("\"{name}\" not found in {file}"))
}

/// The listeners, converted for the async runtime.
struct Listeners {
    http: Option<TcpListener>,
    sasl: Option<UnixListener>,
    metrics: Option<TcpListener>,
}

/// Everything the async side shares.
struct Served {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    http: Option<(Arc<http::Http>, Arc<net::Admission<std::net::IpAddr>>)>,
    sasl: Option<(Arc<saslauthd::Sasl>, Arc<net::Admission<()>>)>,
}

impl Served {
    fn scrape(&self) -> String {
        let mut p = metrics::Pools::default();
        self.shared.runtime().pool_metrics(&mut p);
        if let Some((h, a)) = &self.http {
            p.connections.push((Front::Http, a.open()));
            p.decision_threads.push((Front::Http, h.pool.size()));
            p.decisions_busy.push((Front::Http, h.pool.busy()));
            p.panics.push((Front::Http, h.pool.panics()));
        }
        if let Some((s, a)) = &self.sasl {
            p.connections.push((Front::Saslauthd, a.open()));
            p.decision_threads.push((Front::Saslauthd, s.pool.size()));
            p.decisions_busy.push((Front::Saslauthd, s.pool.busy()));
            p.panics.push((Front::Saslauthd, s.pool.panics()));
        }
        self.metrics.encode(&p)
    }

    fn open(&self) -> usize {
        self.http.as_ref().map(|(_, a)| a.open()).unwrap_or(0)
            + self.sasl.as_ref().map(|(_, a)| a.open()).unwrap_or(0)
    }
}

/// Accept until `stop`; each connection is admitted under the caps or
/// closed at once (HTTP with a 503). A failed accept backs off.
async fn accept_http(
    served: Arc<Served>,
    l: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some((http, admission)) = served.http.clone() else {
        return;
    };
    let mut errors = 0u32;
    loop {
        let next = tokio::select! {
            r = l.accept() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match next {
            Ok(c) => {
                errors = 0;
                c
            }
            Err(e) => {
                accept_failed(&served.metrics, Front::Http, &e, errors);
                tokio::time::sleep(net::backoff(errors)).await;
                errors = errors.saturating_add(1);
                continue;
            }
        };
        match admission.admit(Some(peer.ip())) {
            Ok(place) => {
                let (http, stop) = (http.clone(), stop.clone());
                tokio::spawn(async move {
                    http::connection(http, stream, peer, stop).await;
                    drop(place);
                });
            }
            Err(full) => {
                served.metrics.refused(Front::Http, refusal(full));
                let _ = stream.try_write(http::BUSY);
            }
        }
    }
}

async fn accept_sasl(
    served: Arc<Served>,
    l: tokio::net::UnixListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some((sasl, admission)) = served.sasl.clone() else {
        return;
    };
    let mut errors = 0u32;
    loop {
        let next = tokio::select! {
            r = l.accept() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match next {
            Ok((s, _)) => {
                errors = 0;
                s
            }
            Err(e) => {
                accept_failed(&served.metrics, Front::Saslauthd, &e, errors);
                tokio::time::sleep(net::backoff(errors)).await;
                errors = errors.saturating_add(1);
                continue;
            }
        };
        // Unix peers have no address: the cap is on the listener only.
        match admission.admit(None) {
            Ok(place) => {
                let sasl = sasl.clone();
                tokio::spawn(async move {
                    saslauthd::connection(sasl, stream).await;
                    drop(place);
                });
            }
            // Closed without a reply: a temporary failure for the client.
            Err(full) => served.metrics.refused(Front::Saslauthd, refusal(full)),
        }
    }
}

fn refusal(full: net::Full) -> &'static str {
    match full {
        net::Full::Listener => "connections",
        net::Full::Peer => "peer_connections",
    }
}

fn accept_failed(m: &Metrics, front: Front, e: &std::io::Error, errors_before: u32) {
    m.accept_error(front);
    if errors_before == 0 {
        log::error(&format!(
            "serve: accepting a connection failed ({e}): backing off (too many open files? see LimitNOFILE and serve.max_connections)"
        ));
    }
}

/// `GET /metrics` on `serve.metrics_listen`.
async fn accept_metrics(
    served: Arc<Served>,
    l: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut errors = 0u32;
    loop {
        let next = tokio::select! {
            r = l.accept() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = next else {
            tokio::time::sleep(net::backoff(errors)).await;
            errors = errors.saturating_add(1);
            continue;
        };
        errors = 0;
        let served = served.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let served = served.clone();
                    async move {
                        let r = if req.method() == hyper::Method::GET
                            && req.uri().path() == "/metrics"
                        {
                            let mut r = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(served.scrape()),
                            ));
                            r.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static(
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                ),
                            );
                            r
                        } else {
                            http::answer(404, &serde_json::json!({"error": "not found"}))
                        };
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
            let io = hyper_util::rt::TokioIo::new(net::Timed::new(stream, Duration::from_secs(10)));
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5));
            let _ =
                tokio::time::timeout(Duration::from_secs(30), b.serve_connection(io, svc)).await;
        });
    }
}

/// Whether an HTTP listener on `addr` can be reached only from this host.
pub fn is_loopback(addr: std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Raise the soft limit on open files to the hard limit (at most 1 << 20):
/// every client connection is a descriptor, and `serve.max_connections` per
/// listener should not meet EMFILE first.
fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    let want = l.maximum.map(|m| m.min(1 << 20)).unwrap_or(1 << 20);
    if l.current.is_some_and(|c| c < want) {
        l.current = Some(want);
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// The `serve` command.
pub fn run(config_path: &Path) -> ExitCode {
    let settings =
        match mailcow::load_serve_config(config_path, Instant::now() + Duration::from_secs(10)) {
            Ok(s) => s,
            Err(f) => {
                eprintln!("mailcow-ldap-auth serve: {f}");
                return ExitCode::from(111);
            }
        };
    let cfg = &settings.cfg;
    log::init(cfg.log_target);
    if cfg.serve.http_listen.is_none() && cfg.serve.saslauthd_socket.is_none() {
        eprintln!(
            "mailcow-ldap-auth serve: set serve.http_listen and/or serve.saslauthd_socket in {}",
            config_path.display()
        );
        return ExitCode::from(2);
    }
    if cfg.ldap.ignore_ssl_errors {
        log::warn("ldap.ignore_ssl_errors = true: the directory's TLS certificate is NOT verified");
    }
    let http = match cfg.serve.http_listen.map(bind_http).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "mailcow-ldap-auth serve: cannot listen on {:?}: {e}",
                cfg.serve.http_listen
            );
            return ExitCode::from(111);
        }
    };
    let sasl_path = cfg.serve.saslauthd_socket.clone();
    let sasl = match sasl_path.as_deref().map(|p| bind_unix(cfg, p)).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mailcow-ldap-auth serve: {e}");
            return ExitCode::from(111);
        }
    };
    let metrics_listener = match cfg.serve.metrics_listen.map(TcpListener::bind).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "mailcow-ldap-auth serve: cannot listen on {:?} (serve.metrics_listen): {e}",
                cfg.serve.metrics_listen
            );
            return ExitCode::from(111);
        }
    };
    if let Some(a) = cfg.serve.http_listen.filter(|a| !is_loopback(*a)) {
        log::warn(&format!(
            "serve: http_listen = {a} is reachable from other hosts{}",
            if cfg.serve.http_secret.is_some() {
                ": every /auth and /lookup needs the X-Auth-Secret (http_secret_file)"
            } else {
                " WITHOUT a shared secret (allow_insecure_http = true): anyone who reaches it can test passwords"
            }
        ));
    }
    raise_nofile();
    let workers = cfg.serve.workers;
    let (max_conns, max_per_peer) = (
        cfg.serve.max_connections,
        cfg.serve.max_connections_per_peer,
    );
    let shared = Arc::new(Shared::new(settings, config_path));
    let (stop_refresher, stopped) = mpsc::channel();
    let refresher = spawn_refresher(shared.clone(), stopped);
    let metrics = Arc::new(Metrics::new());
    let listeners = Listeners {
        http,
        sasl,
        metrics: metrics_listener,
    };
    let served = Arc::new(Served {
        shared: shared.clone(),
        metrics: metrics.clone(),
        http: listeners.http.as_ref().map(|_| {
            (
                Arc::new(http::Http {
                    shared: shared.clone(),
                    pool: pool::Pool::new("decide-http", workers),
                    metrics: metrics.clone(),
                }),
                net::Admission::new(max_conns, max_per_peer),
            )
        }),
        sasl: listeners.sasl.as_ref().map(|_| {
            (
                Arc::new(saslauthd::Sasl {
                    shared: shared.clone(),
                    pool: pool::Pool::new("decide-sasl", workers),
                    metrics: metrics.clone(),
                }),
                net::Admission::new(max_conns, usize::MAX),
            )
        }),
    });
    // One I/O thread: reading requests is cheap, the decisions run elsewhere.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mailcow-ldap-auth serve: cannot start the I/O runtime: {e}");
            return ExitCode::from(111);
        }
    };
    let http_addr = listeners.http.as_ref().and_then(|l| l.local_addr().ok());
    let metrics_addr = listeners.metrics.as_ref().and_then(|l| l.local_addr().ok());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = runtime.block_on(async {
        let mut tasks = Vec::new();
        if let Some(l) = listeners.http {
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            tasks.push(tokio::spawn(accept_http(
                served.clone(),
                l,
                stop_rx.clone(),
            )));
        }
        if let Some(l) = listeners.sasl {
            l.set_nonblocking(true)?;
            let l = tokio::net::UnixListener::from_std(l)?;
            tasks.push(tokio::spawn(accept_sasl(
                served.clone(),
                l,
                stop_rx.clone(),
            )));
        }
        if let Some(l) = listeners.metrics {
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            tasks.push(tokio::spawn(accept_metrics(
                served.clone(),
                l,
                stop_rx.clone(),
            )));
        }
        Ok::<_, std::io::Error>(tasks)
    });
    let acceptors = match started {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mailcow-ldap-auth serve: cannot use the listeners: {e}");
            return ExitCode::from(111);
        }
    };
    // The I/O thread runs the runtime until stopped, then drains.
    let drain_limit = {
        let rt = shared.runtime();
        rt.cfg.login_timeout + rt.cfg.serve.request_timeout + rt.cfg.serve.queue_timeout
    };
    let io = {
        let (served, mut stop_rx) = (served.clone(), stop_rx.clone());
        std::thread::Builder::new()
            .name("serve-io".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                    for a in acceptors {
                        let _ = a.await;
                    }
                    // Connections answer what they have read, then close.
                    let end = tokio::time::Instant::now() + drain_limit;
                    while served.open() > 0 && tokio::time::Instant::now() < end {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
    };
    let io = match io {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mailcow-ldap-auth serve: cannot start the I/O thread: {e}");
            return ExitCode::from(111);
        }
    };
    log::info(&format!(
        "serve: ready{}{}{}, {workers} decision threads per front end",
        http_addr
            .map(|a| format!(", http on {a}"))
            .unwrap_or_default(),
        sasl_path
            .as_ref()
            .map(|p| format!(", saslauthd on {}", p.display()))
            .unwrap_or_default(),
        metrics_addr
            .map(|a| format!(", metrics on {a}"))
            .unwrap_or_default()
    ));
    notify("READY=1");

    // Signals, on this thread.
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mailcow-ldap-auth serve: cannot handle signals: {e}");
            return ExitCode::from(111);
        }
    };
    for sig in signals.forever() {
        if sig == SIGHUP {
            notify("RELOADING=1");
            match shared.reload() {
                Ok(()) => log::info("serve: configuration reloaded"),
                Err(e) => log::error(&format!(
                    "serve: reload failed, keeping the old configuration: {e}"
                )),
            }
            notify("READY=1");
            continue;
        }
        break;
    }
    notify("STOPPING=1");
    log::info("serve: stopping: finishing the requests already accepted");
    // Listeners close; connections answer what they have read, then close.
    let _ = stop_tx.send(true);
    let _ = io.join();
    drop(stop_refresher);
    let _ = refresher.join();
    if let Some((h, _)) = &served.http {
        h.pool.close();
    }
    if let Some((s, _)) = &served.sasl {
        s.pool.close();
    }
    if let Some(p) = &sasl_path {
        let _ = std::fs::remove_file(p);
    }
    log::info("serve: stopped");
    ExitCode::SUCCESS
}
