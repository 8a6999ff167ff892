//! mailcow's MariaDB: the rows this tool reads and writes, one file per
//! table family.
//!
//! | file | tables | what |
//! | --- | --- | --- |
//! | `mailbox` | `mailbox` (+ `domain.active`) | [`MailboxRow`], reads, template updates, sync's presence marks and deactivation |
//! | `creation` | all a new mailbox has | [`NewMailbox`], the pure creation plan, the batch under the locked domain row |
//! | `domain` | `domain` | [`DomainRow`], a domain's limits and room |
//! | `template` | `templates` | [`Template`], mailcow's `attribute_hash` |
//! | `alias` | `alias`, `sender_acl` | the mailbox's own alias; aliases from the directory, marked as ours |
//! | `retire` | `mailbox.active` | a retiring directory value applied and undone, with its mark |
//! | `quota` | `quota2`, `quota2replica` | the counters of a new mailbox |
//! | `acl` | `user_acl` | |
//! | `tags` | `tags_mailbox` | |
//! | `sogo` | `_sogo_static_view` | SOGo's row of a mailbox |
//! | `app_passwd` | `app_passwd`, `mailbox.password` | what passdb logins check |
//! | `sasl_log` | `sasl_log` | the UI's "last login" |
//! | `sync_lock` | (`GET_LOCK`) | one sync per database |
//! | `identity_provider` | `identity_provider` | mailcow's UI settings, the configuration merged from them |
//! | `error`, `row` | | failures in the caller's terms; rows read without a panic |
//!
//! Every error is a [`Failure::Temporary`] unless it says something about the
//! user: an unreachable or slow database must never look like a wrong password.
//! Planners (`provision`, `sync`) import the store, never the other way round.

mod acl;
mod alias;
mod app_passwd;
mod creation;
mod domain;
mod error;
mod identity_provider;
mod mailbox;
mod quota;
mod retire;
mod row;
mod sasl_log;
mod sogo;
mod sync_lock;
mod tags;
mod template;

pub use alias::{plan as plan_aliases, AliasChange, AliasRow, DIRECTORY_ALIAS_MARK};
pub use app_passwd::{AppPassword, LoginMailbox};
pub use creation::{plan_creation, Created, CreationPlan, NewMailbox};
pub use domain::{check_domain_room, mailbox_quota, DomainRow, MIB};
pub use error::describe;
pub use identity_provider::{
    identity_provider_source, load_config, load_serve_config, mailcow_sync_on,
    read_identity_provider, ui_settings, ServeSettings,
};
pub use mailbox::{
    LdapMailbox, MailboxRow, MailboxUpdate, Presence, DEACTIVATED_BY_SYNC, MISSING_SINCE,
};
pub use retire::RETIRED_BY_VALUE;
pub use sync_lock::sync_lock_name;
pub use template::{php_json_string, template_hash, Template};

use crate::config::{DatabaseConfig, DbAddress};
use crate::outcome::Failure;
use error::StoreError;
use mysql::{Conn, OptsBuilder, SslOpts, Transaction, TxOpts};
use std::time::{Duration, Instant};

/// Where Debian keeps the system's trusted CAs, used when `database.tls` has no `ca_file`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A connection to mailcow's database.
pub struct Store {
    conn: Conn,
}

impl Store {
    /// Connect, bounded by the configured timeouts and by `deadline`.
    pub fn connect(cfg: &DatabaseConfig, deadline: Instant) -> Result<Store, Failure> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Temporary(
                "login time limit reached before the database was asked".into(),
            ));
        }
        let io_timeout = cfg.timeout.min(left).max(Duration::from_millis(1));
        let mut opts = OptsBuilder::new()
            .user(Some(cfg.user.clone()))
            .pass(Some(cfg.password.expose().to_owned()))
            .db_name(Some(cfg.name.clone()))
            // Never move a TCP connection to a local socket behind our back (TLS would be lost).
            .prefer_socket(false)
            .tcp_connect_timeout(Some(cfg.connect_timeout.min(left)))
            .read_timeout(Some(io_timeout))
            .write_timeout(Some(io_timeout))
            .stmt_cache_size(Some(32))
            // Known, so no `SELECT @@max_allowed_packet` round trip per connection:
            // no statement of ours comes near it.
            .max_allowed_packet(Some(4 * 1024 * 1024));
        // No init statements: the handshake already asks for utf8mb4, and the
        // read timeout bounds lock waits. Each would cost a round trip per login.
        opts = match &cfg.address {
            DbAddress::Tcp { host, port } => {
                opts.ip_or_hostname(Some(host.clone())).tcp_port(*port)
            }
            DbAddress::Socket(p) => opts.socket(Some(p.display().to_string())),
        };
        if cfg.tls {
            let ca = cfg
                .ca_file
                .clone()
                .unwrap_or_else(|| std::path::PathBuf::from(SYSTEM_CA_BUNDLE));
            opts = opts.ssl_opts(SslOpts::default().with_root_cert_path(Some(ca)));
        }
        let conn = Conn::new(opts).map_err(|e| {
            let timeout = if describe(&e).starts_with("no answer within") {
                " (database.connect_timeout_ms)"
            } else {
                ""
            };
            Failure::Temporary(format!(
                "database: cannot connect: {}{timeout}",
                describe(&e)
            ))
        })?;
        Ok(Store { conn })
    }

    /// Whether the connection still answers.
    pub fn ping(&mut self) -> Result<(), Failure> {
        self.on_conn("ping", |c| Ok(c.ping()?))
    }

    /// Run `f` on the connection (reads, single statements), its error in
    /// the caller's terms: `what` names the operation.
    fn on_conn<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, Failure> {
        f(&mut self.conn).map_err(|e| e.failure(what))
    }

    /// Run `f` in one transaction: committed when it returns `Ok`, rolled
    /// back when it fails, and the whole of it tried again (up to `attempts`
    /// times) after a deadlock or a concurrent change
    /// ([`StoreError::retryable`]). `what` names the operation in the failure.
    fn transaction<T>(
        &mut self,
        what: &str,
        opts: TxOpts,
        attempts: u32,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, Failure> {
        let mut last = StoreError::Again;
        for _ in 0..attempts.max(1) {
            let mut tx = self
                .conn
                .start_transaction(opts)
                .map_err(|e| StoreError::from(e).failure("starting a transaction"))?;
            let res = match f(&mut tx) {
                Ok(v) => tx.commit().map(|()| v).map_err(StoreError::from),
                Err(e) => {
                    let _ = tx.rollback();
                    Err(e)
                }
            };
            match res {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() => last = e,
                Err(e) => return Err(e.failure(what)),
            }
        }
        Err(last.failure(&format!("{what} (tried {attempts} times)")))
    }
}

/// Start compiling, on another thread, what the database handshake of this
/// process will need: mysql_common 0.37 (the mysql crate's protocol core)
/// compiles two regular expressions for the server's version string at the
/// first handshake of a process (`HandshakePacket::server_version_parsed`
/// and `maria_db_server_version_parsed`, behind `LazyLock`s), 0.5–0.8 ms of
/// CPU that a one-shot login otherwise spends between the server's greeting
/// and its answer. Started once the configuration names a database, it runs
/// while the configuration is validated and the TCP connection opens; the
/// handshake finds them built, or waits only for the rest. No newer
/// mysql_common and no feature flag avoids them (README, "Performance").
pub fn warm_up_handshake() {
    use mysql_common::constants::{CapabilityFlags, StatusFlags};
    use mysql_common::packets::HandshakePacket;
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("mysql-warm-up".into())
            .spawn(|| {
                let hello = HandshakePacket::new(
                    10,
                    &b"5.5.5-10.11.0-MariaDB"[..],
                    0,
                    [0; 8],
                    None::<&[u8]>,
                    CapabilityFlags::empty(),
                    0,
                    StatusFlags::empty(),
                    None::<&[u8]>,
                );
                let _ = hello.server_version_parsed();
                let _ = hello.maria_db_server_version_parsed();
            });
    });
}
