//! `serve`: a long-running auth service for Dovecot 2.4 / mailcow's Lua
//! passdb (HTTP/JSON) and for Postfix through Cyrus saslauthd's socket
//! protocol. Every request goes through [`crate::auth::decide`], the same
//! decision `checkpassword` makes, with warm LDAP and database connections.
//!
//! Threads: one acceptor per listener, a bounded queue, a fixed pool of
//! workers, one signal thread, and (with `settings_from_database`) one thread
//! that reads mailcow's `identity_provider` rows again every
//! `settings_refresh_seconds` and applies any change, so serve follows mailcow's
//! UI as mailcow's PHP does. SIGTERM/SIGINT drain what was accepted and exit 0;
//! SIGHUP reloads the configuration. A bad configuration or unreadable rows are
//! reported and the last good settings kept.

pub mod http;
mod queue;
pub mod saslauthd;

use crate::auth::{self, Decision, Request};
use crate::config::Config;
use crate::db_slot::StoreSource;
use crate::directory::{Backend, LdapPool, Silent};
use crate::log;
use crate::mailcow::{self, ServeSettings, Store};
use crate::outcome::Failure;
use queue::BoundedQueue;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// I/O limit on a client connection (slow clients must not hold a worker).
const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(10);
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
        loop {
            if let Some((mut store, since)) = pool.idle.pop() {
                drop(pool);
                if since.elapsed() < DB_PING_AFTER || store.ping().is_ok() {
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
                return Store::connect(db, deadline).inspect_err(|_| self.forget_store());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
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
        let deadline = Instant::now() + self.cfg.login_timeout;
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
        d
    }

    /// Whether the database answers now (for /health).
    pub fn database_status(&self) -> Option<Result<(), String>> {
        self.cfg.database.as_ref()?;
        Some(
            self.take_store(Instant::now() + Duration::from_secs(3))
                .map(|store| self.put_store(store))
                .map_err(|f| f.to_string()),
        )
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

/// A connection waiting for a worker.
enum Job {
    Http(TcpStream),
    Sasl(UnixStream),
}

/// A listener whose connections become queued jobs.
trait Listener: Send + 'static {
    fn next(&self) -> std::io::Result<Job>;
}

impl Listener for TcpListener {
    fn next(&self) -> std::io::Result<Job> {
        let (s, _) = self.accept()?;
        s.set_read_timeout(Some(CLIENT_IO_TIMEOUT))?;
        s.set_write_timeout(Some(CLIENT_IO_TIMEOUT))?;
        Ok(Job::Http(s))
    }
}

impl Listener for UnixListener {
    fn next(&self) -> std::io::Result<Job> {
        let (s, _) = self.accept()?;
        s.set_read_timeout(Some(CLIENT_IO_TIMEOUT))?;
        s.set_write_timeout(Some(CLIENT_IO_TIMEOUT))?;
        Ok(Job::Sasl(s))
    }
}

/// Accepts connections and queues them, until `stopping` is set.
#[derive(Clone)]
struct Acceptor {
    queue: Arc<BoundedQueue<Job>>,
    stopping: Arc<AtomicBool>,
    wait: Duration,
}

impl Acceptor {
    fn spawn(self, listener: impl Listener) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || loop {
            let job = listener.next();
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let Ok(job) = job else { continue };
            match self.queue.push_timeout(job, self.wait) {
                Ok(()) => {}
                // Over capacity: HTTP gets a 503; a saslauthd client sees the
                // connection closed without a reply, a temporary failure.
                Err(Job::Http(s)) => http::busy(s),
                Err(Job::Sasl(_)) => {}
            }
        })
    }
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
    let workers = cfg.serve.workers;
    let queue_timeout = cfg.serve.queue_timeout;
    let shared = Arc::new(Shared::new(settings, config_path));
    let (stop_refresher, stopped) = mpsc::channel();
    let refresher = spawn_refresher(shared.clone(), stopped);
    let queue: Arc<BoundedQueue<Job>> = Arc::new(BoundedQueue::new(workers * 4));
    let stopping = Arc::new(AtomicBool::new(false));

    let mut threads = Vec::new();
    for i in 0..workers {
        let (queue, shared) = (queue.clone(), shared.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    while let Some(job) = queue.pop() {
                        let rt = shared.runtime();
                        match job {
                            Job::Http(s) => http::handle(&rt, s),
                            Job::Sasl(s) => saslauthd::handle(&rt, s),
                        }
                    }
                })
                .expect("spawn worker"),
        );
    }
    let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
    let accept = Acceptor {
        queue: queue.clone(),
        stopping: stopping.clone(),
        wait: queue_timeout,
    };
    let acceptors: Vec<_> = [
        http.map(|l| accept.clone().spawn(l)),
        sasl.map(|l| accept.clone().spawn(l)),
    ]
    .into_iter()
    .flatten()
    .collect();
    log::info(&format!(
        "serve: ready{}{}, {workers} workers",
        http_addr
            .map(|a| format!(", http on {a}"))
            .unwrap_or_default(),
        sasl_path
            .as_ref()
            .map(|p| format!(", saslauthd on {}", p.display()))
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
    stopping.store(true, Ordering::SeqCst);
    // Wake the acceptors so they see the flag.
    if let Some(a) = http_addr {
        // Through loopback: a connection to [::] itself is not one everywhere.
        let a = crate::healthcheck::loopback_for(a);
        let _ = TcpStream::connect_timeout(&a, Duration::from_secs(1));
    }
    if let Some(p) = &sasl_path {
        let _ = UnixStream::connect(p);
    }
    for a in acceptors {
        let _ = a.join();
    }
    drop(stop_refresher);
    let _ = refresher.join();
    queue.close();
    for t in threads {
        let _ = t.join();
    }
    if let Some(p) = &sasl_path {
        let _ = std::fs::remove_file(p);
    }
    log::info("serve: stopped");
    ExitCode::SUCCESS
}
