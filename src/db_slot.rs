//! Where a decision gets its database connection, and where it puts it while
//! it waits on the directory.
//!
//! A login never holds a connection to mailcow's database while LDAP answers:
//! with every directory host silent, logins would otherwise pin one MariaDB
//! connection each for the whole LDAP timeout and use up `max_connections`
//! (mailcow's PHP, SOGo and Postfix's SQL lookups share that limit).
//!
//! [`OneShot`] (checkpassword, `test`) keeps the speed of one connection per
//! login for a directory that answers quickly: the connection is *parked*
//! before the directory is asked and taken back afterwards, unless the
//! directory took longer than [`PARK_GRACE`] — then a small thread has already
//! closed it and the login opens a new one. The long-running `serve` hands its
//! connection back to its bounded pool instead (see `serve::Runtime`).

use crate::config::DatabaseConfig;
use crate::mailcow::Store;
use crate::outcome::Failure;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a parked connection stays open while the directory answers.
/// A directory that answers a login within this keeps the speed of one
/// connection per login; a slow or silent one costs the database nothing.
pub const PARK_GRACE: Duration = Duration::from_millis(50);

/// A source of database connections for one decision.
pub trait StoreSource {
    /// Whether a `[database]` is configured at all.
    fn configured(&self) -> bool;
    /// A connection for the next statements: the one held, the parked one
    /// taken back, or a new one, bounded by `deadline`.
    /// `Ok(None)` when no database is configured.
    fn get(&mut self, deadline: Instant) -> Result<Option<&mut Store>, Failure>;
    /// Called before the directory is asked: hold no connection while it
    /// answers. `slow`: the directory is not expected to answer quickly (every
    /// host failed recently), so a parked connection would only wait.
    fn release(&mut self, slow: bool);
}

/// No database (a configuration without `[database]`).
pub struct NoStore;

impl StoreSource for NoStore {
    fn configured(&self) -> bool {
        false
    }
    fn get(&mut self, _deadline: Instant) -> Result<Option<&mut Store>, Failure> {
        Ok(None)
    }
    fn release(&mut self, _slow: bool) {}
}

/// The connection of a one-shot process.
pub struct OneShot<'a> {
    cfg: Option<&'a DatabaseConfig>,
    held: Option<Store>,
    parked: Option<Parked>,
}

impl<'a> OneShot<'a> {
    /// `already` is a connection the caller opened (reading mailcow's settings, say).
    pub fn new(cfg: Option<&'a DatabaseConfig>, already: Option<Store>) -> OneShot<'a> {
        OneShot {
            cfg,
            held: already,
            parked: None,
        }
    }
}

impl StoreSource for OneShot<'_> {
    fn configured(&self) -> bool {
        self.cfg.is_some()
    }

    fn get(&mut self, deadline: Instant) -> Result<Option<&mut Store>, Failure> {
        let Some(cfg) = self.cfg else {
            return Ok(None);
        };
        if self.held.is_none() {
            self.held = self.parked.take().and_then(|p| p.take_back());
        }
        if self.held.is_none() {
            self.held = Some(Store::connect(cfg, deadline)?);
        }
        Ok(self.held.as_mut())
    }

    fn release(&mut self, slow: bool) {
        if let Some(store) = self.held.take() {
            if slow {
                drop(store); // closed now
            } else {
                self.parked = Parked::park(store, PARK_GRACE);
            }
        }
    }
}

/// A connection waiting to be taken back, closed by its own thread when the
/// grace runs out first.
struct Parked {
    slot: Arc<Mutex<Option<Store>>>,
    thread: std::thread::Thread,
}

impl Parked {
    /// Park `store` for `grace`. Without a thread (none could be started) the
    /// connection is closed at once: never held through the directory's answer.
    fn park(store: Store, grace: Duration) -> Option<Parked> {
        let slot = Arc::new(Mutex::new(Some(store)));
        let shared = slot.clone();
        let until = Instant::now() + grace;
        let spawned = std::thread::Builder::new()
            .name("db-park".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::park_timeout(left);
                    if shared.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
                        return; // taken back
                    }
                }
                // Dropping the connection closes it (COM_QUIT, then the socket).
                drop(shared.lock().unwrap_or_else(|p| p.into_inner()).take());
            });
        match spawned {
            Ok(h) => Some(Parked {
                slot,
                thread: h.thread().clone(),
            }),
            Err(_) => {
                drop(slot.lock().unwrap_or_else(|p| p.into_inner()).take());
                None
            }
        }
    }

    /// The connection, if the grace has not closed it yet.
    fn take_back(self) -> Option<Store> {
        let store = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.thread.unpark();
        store
    }
}

impl Drop for Parked {
    /// Not taken back: close it now rather than at the end of the grace.
    fn drop(&mut self) {
        drop(self.slot.lock().unwrap_or_else(|p| p.into_inner()).take());
        self.thread.unpark();
    }
}
