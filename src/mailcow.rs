//! mailcow's MariaDB: the rows this tool reads and writes (`mailbox`,
//! `domain`, `templates`, `alias`, `quota2`, `quota2replica`, `user_acl`,
//! `tags_mailbox`, `identity_provider`).
//!
//! Every error is a [`Failure::Temporary`] unless it says something about the
//! user: an unreachable or slow database must never look like a wrong password.

use crate::config::{
    self, Config, DatabaseConfig, DbAddress, HostList, RawLdap, RawMapping, RawSync, UiSettings,
};
use crate::outcome::Failure;
use crate::provision::{self, MailboxUpdate, NewMailbox};
use mysql::prelude::*;
use mysql::{params, Conn, IsolationLevel, OptsBuilder, SslOpts, TxOpts};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// MariaDB error codes this module acts on.
const ER_DUP_ENTRY: u16 = 1062;
const ER_LOCK_DEADLOCK: u16 = 1213;
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// Errors about the values of one row, not about the database: they fail
/// that mailbox only (data too long, incorrect string, out of range, NULL,
/// foreign key, invalid JSON, CHECK constraint).
const DATA_ERRORS: &[u16] = &[1406, 1366, 1264, 1048, 1452, 3140, 4025];

/// Where Debian keeps the system's trusted CAs, used when `database.tls` has no `ca_file`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A mailbox as read for a login.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxRow {
    pub username: String,
    pub name: String,
    pub domain: String,
    pub active: i64,
    pub authsource: String,
    pub quota: u64,
    pub attributes: Map<String, Value>,
    /// `None` when the domain row is missing.
    pub domain_active: Option<bool>,
}

impl MailboxRow {
    /// mailcow's userdb answers for active 1 and 2 (Dovecot's `user_query`:
    /// `active = '1' OR active = '2'`): 2 is "disallow login", mail is still
    /// delivered.
    pub fn receives_mail(&self) -> bool {
        matches!(self.active, 1 | 2)
    }

    /// A login needs active 1: `user_login()` (mailcow's
    /// `functions.auth.inc.php`) asks for `mailbox.active = '1'`.
    pub fn may_log_in(&self) -> bool {
        self.active == 1
    }

    pub fn is_ldap(&self) -> bool {
        self.authsource == "ldap"
    }

    /// A string-valued attribute (mailcow stores flags as "1"/"0").
    pub fn attr(&self, key: &str) -> Option<String> {
        self.attributes.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// The columns read for a mailbox: username, name, domain, active, authsource,
/// quota, attributes, and the domain's active flag.
type RawRow = (
    String,
    Option<String>,
    String,
    i64,
    Option<String>,
    i64,
    Option<String>,
    Option<i64>,
);

fn row_from(
    (username, name, domain, active, authsource, quota, attrs, dact): RawRow,
) -> MailboxRow {
    MailboxRow {
        username,
        name: name.unwrap_or_default(),
        domain,
        active,
        authsource: authsource.unwrap_or_else(|| "mailcow".into()),
        quota: quota.max(0) as u64,
        attributes: attrs
            .and_then(|t| serde_json::from_str::<Map<String, Value>>(&t).ok())
            .unwrap_or_default(),
        domain_active: dact.map(|a| a == 1),
    }
}

/// Attribute keys the sync keeps in `mailbox.attributes`.
pub const MISSING_SINCE: &str = "ldap_missing_since";
pub const DEACTIVATED_BY_SYNC: &str = "ldap_sync_deactivated";

/// An `ldap` mailbox as the deprovisioning step sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapMailbox {
    pub username: String,
    pub active: i64,
    /// Unix time the entry was first found missing, if it is.
    pub missing_since: Option<u64>,
    pub deactivated_by_sync: bool,
}

/// What [`Store::found_present`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Unchanged,
    /// The "missing since" mark was removed.
    Cleared,
    /// Sync had deactivated it: active again.
    Reactivated,
}

/// The name of the cluster-wide sync lock: one per database, at most 64
/// characters (MariaDB's limit for lock names).
pub fn sync_lock_name(database: &str) -> String {
    format!("mailcow-ldap-auth sync {database}")
        .chars()
        .take(64)
        .collect()
}

/// A domain's limits, as locked for a creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRow {
    pub domain: String,
    pub active: bool,
    /// "Max. possible mailboxes".
    pub max_mailboxes: i64,
    /// Default quota for a new mailbox, MiB.
    pub defquota_mib: u64,
    /// Largest quota of one mailbox, MiB.
    pub maxquota_mib: u64,
    /// Quota of the whole domain, MiB.
    pub quota_mib: u64,
    /// Mailboxes that exist now, and the sum of their quotas in bytes.
    pub mailbox_count: i64,
    pub quota_used_bytes: u64,
}

/// A mailbox template (`templates`, type 'mailbox').
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    /// The `attributes` column exactly as stored (the attribute hash is taken over it).
    pub text: String,
    pub attributes: Map<String, Value>,
    /// mailcow's `attribute_hash` of `text`, computed once.
    pub hash: String,
}

impl Template {
    /// A template from its stored row (`attributes` NULL reads as `{}`).
    pub fn new(name: String, text: Option<String>) -> Template {
        let text = text.unwrap_or_else(|| "{}".into());
        let attributes = serde_json::from_str(&text).unwrap_or_default();
        let hash = crate::provision::template_hash(&text);
        Template {
            name,
            text,
            attributes,
            hash,
        }
    }
}

/// What a creation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Created,
    /// Another login or sync created it first; it is there now.
    AlreadyThere,
}

fn db_failure(what: &str, e: mysql::Error) -> Failure {
    match mysql_code(&e) {
        Some(code) if DATA_ERRORS.contains(&code) => Failure::Denied(format!(
            "the database refused this mailbox's data: {what}: {}",
            one_line(&e.to_string())
        )),
        _ => Failure::Temporary(format!("database: {what}: {}", describe(&e))),
    }
}

/// A database error in words: what happened and the setting that matters,
/// not the client library's debug form (`CodecError { IO error: ... }`).
pub fn describe(e: &mysql::Error) -> String {
    use std::io::ErrorKind;
    if let mysql::Error::MySqlError(m) = e {
        let said = one_line(&m.message);
        return match m.code {
            1040 => format!(
                "the server has no connection left (ERROR 1040, \"{said}\"): its max_connections is used up, and mailcow's PHP, SOGo and Postfix share it; raise max_connections or find who holds the connections"
            ),
            1203 | 1226 => format!(
                "the database user has no connection left (ERROR {}, \"{said}\"): raise its MAX_USER_CONNECTIONS or max_user_connections",
                m.code
            ),
            ER_LOCK_WAIT_TIMEOUT => format!(
                "a row stayed locked by another transaction (ERROR 1205, \"{said}\"): the server's innodb_lock_wait_timeout ran out"
            ),
            ER_LOCK_DEADLOCK => format!("a deadlock with another transaction (ERROR 1213, \"{said}\")"),
            1045 => format!("access denied (ERROR 1045, \"{said}\"): check database.user and database.password"),
            1049 => format!("no such database (ERROR 1049, \"{said}\"): check database.name"),
            code => format!("the server said ERROR {code} ({}): {said}", m.state),
        };
    }
    let kind = match e {
        mysql::Error::IoError(io) => Some(io.kind()),
        _ => {
            let mut src = std::error::Error::source(e);
            let mut kind = None;
            while let Some(s) = src {
                if let Some(io) = s.downcast_ref::<std::io::Error>() {
                    kind = Some(io.kind());
                    break;
                }
                src = s.source();
            }
            kind
        }
    };
    let text = one_line(&e.to_string());
    let timed_out = matches!(kind, Some(ErrorKind::WouldBlock | ErrorKind::TimedOut))
        || text.contains("os error 11")
        || text.contains("os error 110")
        || text.contains("timed out");
    if timed_out {
        return "no answer within database.timeout_ms (the server is overloaded, or a row this needs is locked by a long transaction)".into();
    }
    match kind {
        Some(ErrorKind::ConnectionRefused) => {
            "connection refused: nothing listens there (check database.host and database.port, or database.socket, and that MariaDB runs)".into()
        }
        Some(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof | ErrorKind::ConnectionAborted) => {
            "the server closed the connection (restarted, or wait_timeout ended an idle connection)".into()
        }
        Some(ErrorKind::NotFound) => "no such socket (check database.socket)".into(),
        _ => match e {
            mysql::Error::TlsError(_) => format!("TLS: {text} (check database.tls and database.ca_file)"),
            _ => text,
        },
    }
}

/// `bytes` random bytes from the kernel, as hex.
fn random_hex(bytes: usize) -> Result<String, mysql::Error> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(mysql::Error::IoError)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn mysql_code(e: &mysql::Error) -> Option<u16> {
    match e {
        mysql::Error::MySqlError(m) => Some(m.code),
        _ => None,
    }
}

/// A connection to mailcow's database.
/// id, password, active and the six protocol flags, as read.
type AppPasswdRow = (i64, String, i64, i64, i64, i64, i64, i64, i64);

/// One row of mailcow's `app_passwd`.
#[derive(Debug, Clone)]
pub struct AppPassword {
    pub id: i64,
    pub hash: String,
    pub active: bool,
    /// The per-protocol flags, by column name.
    pub flags: [(&'static str, bool); 6],
}

impl AppPassword {
    /// Whether this app password may be used for `flag` (a column name such
    /// as `imap_access`); `None`: no service given, anything goes. A flag
    /// `app_passwd` has no column for refuses, as mailcow's
    /// `apppass_login()` (`$row[...] != '1'` on a missing key).
    pub fn allows(&self, flag: Option<&str>) -> bool {
        match flag {
            None => true,
            Some(f) => self.flags.iter().any(|(n, on)| *n == f && *on),
        }
    }
}

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

    /// Every app password of a mailbox, active or not (mailcow's `app_passwd`).
    pub fn app_passwords(&mut self, mailbox: &str) -> Result<Vec<AppPassword>, Failure> {
        let rows: Vec<AppPasswdRow> = self
            .conn
            .exec(
                "SELECT id, password, active, imap_access, pop3_access, smtp_access, sieve_access, dav_access, eas_access \
                 FROM app_passwd WHERE mailbox = ? ORDER BY id",
                (mailbox,),
            )
            .map_err(|e| db_failure("reading the app passwords", e))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, hash, active, imap, pop3, smtp, sieve, dav, eas)| AppPassword {
                    id,
                    hash,
                    active: active == 1,
                    flags: [
                        ("imap_access", imap == 1),
                        ("pop3_access", pop3 == 1),
                        ("smtp_access", smtp == 1),
                        ("sieve_access", sieve == 1),
                        ("dav_access", dav == 1),
                        ("eas_access", eas == 1),
                    ],
                },
            )
            .collect())
    }

    /// The SQL password hash (`mailbox.password`) and `kind` of a mailbox.
    pub fn mailbox_secret(&mut self, username: &str) -> Result<Option<(String, String)>, Failure> {
        self.conn
            .exec_first(
                "SELECT password, kind FROM mailbox WHERE username = ?",
                (username,),
            )
            .map_err(|e| db_failure("reading the mailbox password", e))
    }

    /// The row mailcow's `set_sasl_log()` (`data/web/inc/functions.inc.php`)
    /// writes on each successful login: it feeds the UI's "last login".
    /// `app_password` is the app password's id, 0 for the mailbox's own password.
    pub fn sasl_log(
        &mut self,
        username: &str,
        real_rip: &str,
        service: &str,
        app_password: i64,
    ) -> Result<(), Failure> {
        self.conn
            .exec_drop(
                "REPLACE INTO sasl_log (username, real_rip, service, app_password) VALUES (?, ?, ?, ?)",
                (username, real_rip, service, app_password),
            )
            .map_err(|e| db_failure("writing sasl_log", e))
    }

    /// Whether the connection still answers.
    pub fn ping(&mut self) -> Result<(), Failure> {
        self.conn.ping().map_err(|e| db_failure("ping", e))
    }

    /// The mailbox `username`, with its domain's state.
    pub fn mailbox(&mut self, username: &str) -> Result<Option<MailboxRow>, Failure> {
        Self::read_mailbox(&mut self.conn, username)
    }

    fn read_mailbox<Q: Queryable>(
        q: &mut Q,
        username: &str,
    ) -> Result<Option<MailboxRow>, Failure> {
        let row: Option<RawRow> = q
            .exec_first(
                "SELECT m.username, m.name, m.domain, m.active, m.authsource, m.quota, m.attributes, d.active \
                 FROM mailbox m LEFT JOIN domain d ON d.domain = m.domain WHERE m.username = ?",
                (username,),
            )
            .map_err(|e| db_failure("reading the mailbox", e))?;
        Ok(row.map(row_from))
    }

    /// A mailbox template by name.
    pub fn template(&mut self, name: &str) -> Result<Option<Template>, Failure> {
        let row: Option<(String, Option<String>)> = self
            .conn
            .exec_first(
                "SELECT template, attributes FROM templates WHERE type = 'mailbox' AND template = ? ORDER BY id LIMIT 1",
                (name,),
            )
            .map_err(|e| db_failure("reading the template", e))?;
        Ok(row.map(|(name, text)| Template::new(name, text)))
    }

    /// Names of every mailbox template.
    pub fn template_names(&mut self) -> Result<Vec<String>, Failure> {
        self.conn
            .query("SELECT template FROM templates WHERE type = 'mailbox' ORDER BY id")
            .map_err(|e| db_failure("listing templates", e))
    }

    /// A domain's state and limits, without locking (for diagnostics).
    pub fn domain(&mut self, domain: &str) -> Result<Option<DomainRow>, Failure> {
        Self::read_domain(&mut self.conn, domain, false)
    }

    fn read_domain<Q: Queryable>(
        q: &mut Q,
        domain: &str,
        lock: bool,
    ) -> Result<Option<DomainRow>, Failure> {
        let sql = if lock {
            "SELECT domain, active, mailboxes, defquota, maxquota, quota FROM domain WHERE domain = ? FOR UPDATE"
        } else {
            "SELECT domain, active, mailboxes, defquota, maxquota, quota FROM domain WHERE domain = ?"
        };
        let row: Option<(String, i64, i64, i64, i64, i64)> = q
            .exec_first(sql, (domain,))
            .map_err(|e| db_failure("reading the domain", e))?;
        let Some((domain, active, max_mailboxes, defq, maxq, quota)) = row else {
            return Ok(None);
        };
        let usage: Option<(i64, Option<i64>)> = q
            .exec_first(
                "SELECT COUNT(*), SUM(quota) FROM mailbox WHERE domain = ? AND (kind = '' OR kind IS NULL)",
                (&domain,),
            )
            .map_err(|e| db_failure("counting the domain's mailboxes", e))?;
        let (count, used) = usage.unwrap_or((0, None));
        Ok(Some(DomainRow {
            domain,
            active: active == 1,
            max_mailboxes,
            defquota_mib: defq.max(0) as u64,
            maxquota_mib: maxq.max(0) as u64,
            quota_mib: quota.max(0) as u64,
            mailbox_count: count,
            quota_used_bytes: used.unwrap_or(0).max(0) as u64,
        }))
    }

    /// Create a mailbox and everything that belongs to it in one transaction,
    /// with the domain row locked so that limits hold under concurrency.
    /// The locked domain row decides whether the creation may go ahead and
    /// with which quota ([`provision::check_domain_room`]); any failure rolls
    /// everything back.
    pub fn create_mailbox(&mut self, new: &NewMailbox) -> Result<Created, Failure> {
        let mut results = self.create_mailboxes(&[new])?;
        results.pop().unwrap_or(Err(Failure::Temporary(
            "database: nothing was created".into(),
        )))
    }

    /// Create mailboxes of ONE domain in one transaction: the domain row is
    /// locked and its mailboxes counted once, each mailbox gets a savepoint
    /// (a refused one rolls back alone), and limits are checked against the
    /// running totals. Returns one result per mailbox; `Err` when the database
    /// failed and nothing was written.
    pub fn create_mailboxes(
        &mut self,
        news: &[&NewMailbox],
    ) -> Result<Vec<Result<Created, Failure>>, Failure> {
        for attempt in 0..3 {
            match self.try_create_batch(news) {
                Err(Retry::Again) if attempt < 2 => continue,
                Err(Retry::Again) => break,
                Err(Retry::Fail(f)) => return Err(f),
                Ok(c) => return Ok(c),
            }
        }
        Err(Failure::Temporary(
            "database: creation kept deadlocking".into(),
        ))
    }

    fn try_create_batch(
        &mut self,
        news: &[&NewMailbox],
    ) -> Result<Vec<Result<Created, Failure>>, Retry> {
        let Some(first) = news.first() else {
            return Ok(Vec::new());
        };
        if news.iter().any(|n| n.domain != first.domain) {
            return Err(Retry::Fail(Failure::Temporary(
                "internal: one domain per batch".into(),
            )));
        }
        let opts = TxOpts::default().set_isolation_level(Some(IsolationLevel::ReadCommitted));
        let mut tx = self
            .conn
            .start_transaction(opts)
            .map_err(|e| Retry::from_db("starting a transaction", e))?;
        let mut domain = Self::read_domain(&mut tx, &first.domain, true).map_err(Retry::Fail)?;
        let mut results = Vec::with_capacity(news.len());
        for new in news {
            let savepoint = news.len() > 1;
            if savepoint {
                tx.query_drop("SAVEPOINT one_mailbox")
                    .map_err(|e| Retry::from_db("a savepoint", e))?;
            }
            match Self::create_one(&mut tx, new, domain.as_ref()) {
                Ok((Created::Created, quota)) => {
                    if let Some(d) = domain.as_mut() {
                        d.mailbox_count += 1;
                        d.quota_used_bytes += quota;
                    }
                    results.push(Ok(Created::Created));
                }
                Ok((created, _)) => results.push(Ok(created)),
                Err(Retry::Fail(f @ (Failure::Denied(_) | Failure::BadRequest(_))))
                    if savepoint =>
                {
                    tx.query_drop("ROLLBACK TO SAVEPOINT one_mailbox")
                        .map_err(|e| Retry::from_db("rolling back one mailbox", e))?;
                    results.push(Err(f));
                    continue;
                }
                Err(Retry::Fail(f @ (Failure::Denied(_) | Failure::BadRequest(_)))) => {
                    // The only mailbox of the batch: nothing of it is kept.
                    let _ = tx.rollback();
                    results.push(Err(f));
                    return Ok(results);
                }
                // The database itself failed: nothing of this batch is kept.
                Err(e) => {
                    let _ = tx.rollback();
                    return Err(e);
                }
            }
            if savepoint {
                tx.query_drop("RELEASE SAVEPOINT one_mailbox")
                    .map_err(|e| Retry::from_db("a savepoint", e))?;
            }
        }
        // SOGo's rows of the new mailboxes, in the same transaction: one
        // look at the aliases for the whole batch.
        let created: Vec<&str> = news
            .iter()
            .zip(&results)
            .filter(|(_, r)| matches!(r, Ok(Created::Created)))
            .map(|(n, _)| n.username.as_str())
            .collect();
        Self::refresh_sogo_rows(&mut tx, &created)
            .map_err(|e| Retry::from_db("writing SOGo's rows (_sogo_static_view)", e))?;
        tx.commit()
            .map_err(|e| Retry::from_db("committing new mailboxes", e))?;
        Ok(results)
    }

    /// One mailbox inside the caller's transaction. Returns what happened and
    /// the quota given. A refusal (`Denied`) has written nothing.
    fn create_one(
        tx: &mut mysql::Transaction<'_>,
        new: &NewMailbox,
        domain: Option<&DomainRow>,
    ) -> Result<(Created, u64), Retry> {
        // Someone may have created it while we waited for the lock.
        if Self::read_mailbox(tx, &new.username)
            .map_err(Retry::Fail)?
            .is_some()
        {
            return Ok((Created::AlreadyThere, 0));
        }
        let quota = provision::check_domain_room(&new.domain, new.template_quota, domain)
            .map_err(Retry::Fail)?;
        let alias_taken: Option<String> = tx
            .exec_first("SELECT goto FROM alias WHERE address = ?", (&new.username,))
            .map_err(|e| Retry::from_db("reading aliases", e))?;
        if let Some(goto) = alias_taken {
            return Err(Retry::Fail(Failure::Denied(format!(
                "an alias {} -> {} already exists in mailcow; remove it to let the mailbox be created",
                new.username, goto
            ))));
        }
        // Which table the failing statement wrote: a duplicate in the mailbox
        // table is a concurrent creation, in another a leftover row.
        let mut table = "mailbox";
        let res = (|| -> Result<(), mysql::Error> {
            tx.exec_drop(
                "INSERT INTO mailbox (username, password, name, quota, local_part, domain, attributes, \
                 authsource, active) VALUES (:username, '', :name, :quota, :local_part, :domain, :attributes, 'ldap', :active)",
                params! {
                    "username" => &new.username,
                    "name" => &new.name,
                    "quota" => quota,
                    "local_part" => &new.local_part,
                    "domain" => &new.domain,
                    "attributes" => new.attributes_json(),
                    "active" => new.active,
                },
            )?;
            // A leftover row (of a mailbox removed by hand) is reset, as
            // mailbox('add', 'mailbox') in mailcow's functions.mailbox.inc.php does.
            table = "quota2";
            tx.exec_drop(
                "INSERT INTO quota2 (username, bytes, messages) VALUES (?, 0, 0) \
                 ON DUPLICATE KEY UPDATE bytes = 0, messages = 0",
                (&new.username,),
            )?;
            table = "quota2replica";
            tx.exec_drop(
                "INSERT INTO quota2replica (username, bytes, messages) VALUES (?, 0, 0) \
                 ON DUPLICATE KEY UPDATE bytes = 0, messages = 0",
                (&new.username,),
            )?;
            table = "alias";
            tx.exec_drop(
                "INSERT INTO alias (address, goto, domain, active) VALUES (:a, :a, :d, :act)",
                params! { "a" => &new.username, "d" => &new.domain, "act" => new.active },
            )?;
            table = "user_acl";
            Self::write_acl(tx, &new.username, &new.acl, false)?;
            table = "tags_mailbox";
            Self::write_tags(tx, &new.username, &new.tags)?;
            Ok(())
        })();
        match res {
            Ok(()) => Ok((Created::Created, quota)),
            // Created concurrently between our check and our insert.
            Err(e) if mysql_code(&e) == Some(ER_DUP_ENTRY) && table == "mailbox" => {
                Err(Retry::Again)
            }
            // A row of a mailbox deleted by hand, say: this mailbox fails, the rest goes on.
            Err(e) if mysql_code(&e) == Some(ER_DUP_ENTRY) => Err(Retry::Fail(Failure::Denied(
                format!(
                    "a leftover row for {} in mailcow's {table} table (of a mailbox removed by hand?): remove it to let the mailbox be created",
                    new.username
                ),
            ))),
            Err(e) => Err(Retry::from_db("creating the mailbox", e)),
        }
    }

    fn write_acl<Q: Queryable>(
        q: &mut Q,
        username: &str,
        acl: &[(String, bool)],
        replace: bool,
    ) -> Result<(), mysql::Error> {
        if replace {
            q.exec_drop("DELETE FROM user_acl WHERE username = ?", (username,))?;
        }
        let mut cols = vec!["username".to_owned()];
        let mut vals: Vec<mysql::Value> = vec![username.into()];
        for (k, v) in acl {
            cols.push(format!("`{k}`"));
            vals.push(i64::from(*v).into());
        }
        let marks = vec!["?"; cols.len()].join(", ");
        q.exec_drop(
            format!(
                "INSERT INTO user_acl ({}) VALUES ({marks})",
                cols.join(", ")
            ),
            vals,
        )
    }

    fn write_tags<Q: Queryable>(
        q: &mut Q,
        username: &str,
        tags: &[String],
    ) -> Result<(), mysql::Error> {
        for t in tags {
            q.exec_drop(
                "INSERT IGNORE INTO tags_mailbox (tag_name, username) VALUES (?, ?)",
                (t, username),
            )?;
        }
        Ok(())
    }

    /// SOGo's rows of these mailboxes (`_sogo_static_view`, a table SOGo
    /// reads its users from), made as mailcow's
    /// `update_sogo_static_view($mailbox)` (functions.inc.php) makes them: from
    /// the mailbox, its aliases (mailcow's `grouped_mail_aliases`: the active,
    /// SOGo-visible aliases of each `goto` list naming the mailbox), its alias
    /// domains' addresses (`grouped_domain_alias_address`) and external sender
    /// ACLs (`grouped_sender_acl_external`) — the views' definitions from
    /// init_db.inc.php, asked for these mailboxes only and with plain reads,
    /// so no other mailbox's row is read or locked (mailcow's INSERT ... SELECT
    /// over the views locks every mailbox it scans), and the alias table read
    /// once for all of them. A `goto` list names a mailbox when one of its
    /// addresses is the mailbox's, ignoring case (mailcow's REGEXP, without
    /// reading the address's dots as "any character"). Written when the
    /// mailbox is active 1, removed when it is not (0, or 2 "disallow login").
    /// Inside the caller's transaction, so SOGo never sees a mailbox change
    /// without its row. `c_password` is a salted SHA-256 of random bytes,
    /// never used to log in (mailcow means the same but, its variables being
    /// undefined there, writes the hash of the empty password).
    fn refresh_sogo_rows<Q: Queryable>(q: &mut Q, usernames: &[&str]) -> Result<(), mysql::Error> {
        if usernames.is_empty() {
            return Ok(());
        }
        let likes = vec!["goto LIKE CONCAT('%', ?, '%')"; usernames.len()].join(" OR ");
        let groups: Vec<(String, String)> = q.exec(
            format!(
                "SELECT goto, GROUP_CONCAT(address ORDER BY address SEPARATOR ' ') FROM alias \
                 WHERE address != goto AND active = '1' AND sogo_visible = '1' AND address NOT LIKE '@%' \
                 AND ({likes}) GROUP BY goto"
            ),
            usernames.to_vec(),
        )?;
        for username in usernames {
            let me = username.to_lowercase();
            let mut mine: Vec<&str> = groups
                .iter()
                .filter(|(goto, _)| goto.split(',').any(|a| a.trim().to_lowercase() == me))
                .map(|(_, aliases)| aliases.as_str())
                .collect();
            mine.sort_unstable();
            Self::refresh_sogo_row(q, username, &mine.join(" "))?;
        }
        Ok(())
    }

    fn refresh_sogo_row<Q: Queryable>(
        q: &mut Q,
        username: &str,
        aliases: &str,
    ) -> Result<(), mysql::Error> {
        type SogoRow = (String, Option<String>, String, i64, String, String);
        let row: Option<SogoRow> = q.exec_first(
            "SELECT m.domain, m.name, m.kind, m.multiple_bookings, \
               IFNULL((SELECT GROUP_CONCAT(m.local_part, '@', ad.alias_domain SEPARATOR ' ') \
                 FROM alias_domain ad WHERE ad.target_domain = m.domain), ''), \
               IFNULL((SELECT GROUP_CONCAT(send_as SEPARATOR ' ') FROM sender_acl \
                 WHERE logged_in_as = :username AND send_as NOT LIKE '@%' AND external = '1'), '') \
             FROM mailbox m WHERE m.username = :username AND m.active = '1'",
            params! { "username" => username },
        )?;
        let Some((domain, name, kind, bookings, ad_aliases, ext_acl)) = row else {
            return q.exec_drop("DELETE FROM _sogo_static_view WHERE c_uid = ?", (username,));
        };
        let random = random_hex(40)?;
        let (secret, salt) = random.split_at(48);
        q.exec_drop(
            "INSERT INTO _sogo_static_view (c_uid, domain, c_name, c_password, c_cn, mail, aliases, ad_aliases, ext_acl, kind, multiple_bookings) \
             VALUES (:username, :domain, :username, \
               CONCAT('{SSHA256}', TO_BASE64(CONCAT(UNHEX(SHA2(CONCAT(UNHEX(:secret), UNHEX(:salt)), 256)), UNHEX(:salt)))), \
               :name, :username, :aliases, :ad_aliases, :ext_acl, :kind, :bookings) \
             ON DUPLICATE KEY UPDATE domain = VALUES(domain), c_name = VALUES(c_name), \
               c_password = VALUES(c_password), c_cn = VALUES(c_cn), mail = VALUES(mail), \
               aliases = VALUES(aliases), ad_aliases = VALUES(ad_aliases), ext_acl = VALUES(ext_acl), \
               kind = VALUES(kind), multiple_bookings = VALUES(multiple_bookings)",
            params! {
                "username" => username, "domain" => domain, "secret" => secret, "salt" => salt,
                "name" => name, "aliases" => aliases, "ad_aliases" => ad_aliases,
                "ext_acl" => ext_acl, "kind" => kind, "bookings" => bookings,
            },
        )
    }

    /// Apply a template (and name) to an existing `ldap` mailbox in one
    /// transaction. Never changes `active`, the password or the authsource.
    /// Returns whether it was applied now (not already, by someone else).
    pub fn update_mailbox(&mut self, upd: &MailboxUpdate) -> Result<bool, Failure> {
        // Only if no one (a login, another run) has applied the same already,
        // checked in the same statement: a template change is applied once per mailbox.
        let hash = upd
            .attributes
            .get("attribute_hash")
            .and_then(Value::as_str)
            .filter(|_| upd.acl.is_some());
        let (condition, value) = match hash {
            Some(h) => (
                "NOT (JSON_VALUE(attributes, '$.attribute_hash') <=> :cond)",
                h.to_owned(),
            ),
            None => ("NOT (BINARY name <=> BINARY :cond)", upd.name.clone()),
        };
        let mut tx = self
            .conn
            .start_transaction(TxOpts::default())
            .map_err(|e| db_failure("starting a transaction", e))?;
        let res = (|| -> Result<bool, mysql::Error> {
            let hit = tx
                .exec_iter(
                    format!(
                        "UPDATE mailbox SET name = :name, quota = :quota, attributes = :attributes \
                         WHERE username = :username AND authsource = 'ldap' AND {condition}"
                    ),
                    params! {
                        "name" => &upd.name,
                        "quota" => upd.quota,
                        "attributes" => upd.attributes_json(),
                        "username" => &upd.username,
                        "cond" => &value,
                    },
                )?
                .affected_rows()
                > 0;
            if !hit {
                return Ok(false);
            }
            if let Some(acl) = &upd.acl {
                Self::write_acl(&mut tx, &upd.username, acl, true)?;
            }
            // The template's tags are added, none removed: an admin's own tag
            // and a tag dropped from the template stay, as with mailcow's
            // mailbox('edit', 'mailbox') (INSERT per tag, no DELETE).
            if let Some(tags) = &upd.tags {
                Self::write_tags(&mut tx, &upd.username, tags)?;
            }
            Self::refresh_sogo_rows(&mut tx, &[upd.username.as_str()])?;
            Ok(true)
        })();
        match res {
            Ok(hit) => {
                tx.commit()
                    .map_err(|e| db_failure("committing the update", e))?;
                Ok(hit)
            }
            Err(e) => {
                let _ = tx.rollback();
                Err(db_failure("updating the mailbox", e))
            }
        }
    }

    /// Every mailbox template, by name (the first of each name).
    pub fn templates(&mut self) -> Result<HashMap<String, Template>, Failure> {
        let rows: Vec<(String, Option<String>)> = self
            .conn
            .query("SELECT template, attributes FROM templates WHERE type = 'mailbox' ORDER BY id")
            .map_err(|e| db_failure("reading templates", e))?;
        let mut map = HashMap::new();
        for (name, text) in rows {
            map.entry(name.clone())
                .or_insert_with(|| Template::new(name, text));
        }
        Ok(map)
    }

    /// The mailboxes among `usernames` that exist, by lower-cased username.
    pub fn mailboxes(
        &mut self,
        usernames: &[String],
    ) -> Result<HashMap<String, MailboxRow>, Failure> {
        let mut out = HashMap::new();
        for chunk in usernames.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let rows: Vec<RawRow> = self
                .conn
                .exec(
                    format!(
                        "SELECT m.username, m.name, m.domain, m.active, m.authsource, m.quota, m.attributes, d.active \
                         FROM mailbox m LEFT JOIN domain d ON d.domain = m.domain WHERE m.username IN ({marks})"
                    ),
                    chunk.to_vec(),
                )
                .map_err(|e| db_failure("reading mailboxes", e))?;
            for r in rows {
                let row = row_from(r);
                out.insert(row.username.to_lowercase(), row);
            }
        }
        Ok(out)
    }

    /// Every `ldap` mailbox with its sync markers (for deprovisioning).
    pub fn ldap_mailboxes(&mut self) -> Result<Vec<LdapMailbox>, Failure> {
        let rows: Vec<(String, i64, Option<String>, Option<String>)> = self
            .conn
            .query(format!(
                "SELECT username, active, JSON_UNQUOTE(JSON_EXTRACT(attributes, '$.{MISSING_SINCE}')), \
                 JSON_UNQUOTE(JSON_EXTRACT(attributes, '$.{DEACTIVATED_BY_SYNC}')) FROM mailbox WHERE authsource = 'ldap'"
            ))
            .map_err(|e| db_failure("listing LDAP mailboxes", e))?;
        Ok(rows
            .into_iter()
            .map(|(username, active, since, deact)| LdapMailbox {
                username,
                active,
                missing_since: since.and_then(|s| s.parse().ok()),
                deactivated_by_sync: deact.as_deref() == Some("1"),
            })
            .collect())
    }

    /// Record that the mailbox's directory entry was not seen since `since`:
    /// only on an active mailbox not yet marked (the first mark counts) and
    /// not deactivated by sync. Returns whether it was marked now.
    pub fn mark_missing(&mut self, username: &str, since: u64) -> Result<bool, Failure> {
        let r = self
            .conn
            .exec_iter(
                format!(
                    "UPDATE mailbox SET attributes = JSON_SET(COALESCE(attributes, '{{}}'), '$.{MISSING_SINCE}', ?) \
                     WHERE username = ? AND authsource = 'ldap' AND active <> 0 \
                     AND JSON_VALUE(attributes, '$.{MISSING_SINCE}') IS NULL \
                     AND COALESCE(JSON_VALUE(attributes, '$.{DEACTIVATED_BY_SYNC}'), '') <> '1'"
                ),
                (since.to_string(), username),
            )
            .map_err(|e| db_failure("marking a mailbox missing", e))?;
        Ok(r.affected_rows() > 0)
    }

    /// Deactivate a departed user's mailbox (and its own alias), marked as
    /// done by sync — only if, in the same statement, the "missing since"
    /// mark is still there and dates from `marked_before` or earlier: a run
    /// (or a login) that found the user present in the meantime has removed
    /// it, and a plan made from an older view must not undo that.
    /// Returns whether it was deactivated now.
    pub fn deactivate(&mut self, username: &str, marked_before: u64) -> Result<bool, Failure> {
        let mut tx = self
            .conn
            .start_transaction(TxOpts::default())
            .map_err(|e| db_failure("starting a transaction", e))?;
        let res = (|| -> Result<bool, mysql::Error> {
            let hit = tx
                .exec_iter(
                    format!(
                        "UPDATE mailbox SET active = 0, \
                         attributes = JSON_SET(COALESCE(attributes, '{{}}'), '$.{DEACTIVATED_BY_SYNC}', '1') \
                         WHERE username = ? AND authsource = 'ldap' AND active <> 0 \
                         AND CAST(JSON_VALUE(attributes, '$.{MISSING_SINCE}') AS UNSIGNED) <= ?"
                    ),
                    (username, marked_before),
                )?
                .affected_rows()
                > 0;
            if hit {
                tx.exec_drop(
                    "UPDATE alias SET active = 0 WHERE address = ? AND goto = ?",
                    (username, username),
                )?;
                Self::refresh_sogo_rows(&mut tx, &[username])?;
            }
            Ok(hit)
        })();
        match res {
            Ok(hit) => {
                tx.commit()
                    .map_err(|e| db_failure("deactivating a mailbox", e))?;
                Ok(hit)
            }
            Err(e) => {
                let _ = tx.rollback();
                Err(db_failure("deactivating a mailbox", e))
            }
        }
    }

    /// The user was found in the directory (by a sync run or a login): undo
    /// what sync did to the mailbox, in one transaction on the locked row —
    /// a deactivation by sync is reversed (never an admin's: those carry no
    /// sync mark), a "missing since" mark removed.
    pub fn found_present(&mut self, username: &str) -> Result<Presence, Failure> {
        let mut tx = self
            .conn
            .start_transaction(TxOpts::default())
            .map_err(|e| db_failure("starting a transaction", e))?;
        let res = (|| -> Result<Presence, mysql::Error> {
            let row: Option<(Option<String>, Option<String>)> = tx.exec_first(
                format!(
                    "SELECT JSON_VALUE(attributes, '$.{DEACTIVATED_BY_SYNC}'), JSON_VALUE(attributes, '$.{MISSING_SINCE}') \
                     FROM mailbox WHERE username = ? AND authsource = 'ldap' FOR UPDATE"
                ),
                (username,),
            )?;
            let Some((deactivated, missing)) = row else {
                return Ok(Presence::Unchanged);
            };
            if deactivated.as_deref() == Some("1") {
                tx.exec_drop(
                    format!(
                        "UPDATE mailbox SET active = 1, \
                         attributes = JSON_REMOVE(JSON_REMOVE(attributes, '$.{DEACTIVATED_BY_SYNC}'), '$.{MISSING_SINCE}') \
                         WHERE username = ?"
                    ),
                    (username,),
                )?;
                tx.exec_drop(
                    "UPDATE alias SET active = 1 WHERE address = ? AND goto = ?",
                    (username, username),
                )?;
                Self::refresh_sogo_rows(&mut tx, &[username])?;
                return Ok(Presence::Reactivated);
            }
            if missing.is_some() {
                tx.exec_drop(
                    format!(
                        "UPDATE mailbox SET attributes = JSON_REMOVE(attributes, '$.{MISSING_SINCE}') WHERE username = ?"
                    ),
                    (username,),
                )?;
                return Ok(Presence::Cleared);
            }
            Ok(Presence::Unchanged)
        })();
        match res {
            Ok(p) => {
                tx.commit()
                    .map_err(|e| db_failure("marking a mailbox present", e))?;
                Ok(p)
            }
            Err(e) => {
                let _ = tx.rollback();
                Err(db_failure("marking a mailbox present", e))
            }
        }
    }

    /// Try to take the lock that keeps syncs of every host apart (MariaDB
    /// `GET_LOCK`, held by this connection until it closes: the server lets
    /// it go if the holder dies). `Ok(false)`: another sync holds it.
    pub fn try_sync_lock(&mut self, database: &str) -> Result<bool, Failure> {
        let name = sync_lock_name(database);
        let got: Option<Option<i64>> = self
            .conn
            .exec_first("SELECT GET_LOCK(?, 0)", (&name,))
            .map_err(|e| db_failure("taking the sync lock (GET_LOCK)", e))?;
        match got.flatten() {
            Some(1) => Ok(true),
            Some(_) => Ok(false),
            None => Err(Failure::Temporary(format!(
                "database: GET_LOCK('{name}') failed"
            ))),
        }
    }

    /// Every row of `identity_provider`, as (key, value).
    pub fn identity_provider_rows(&mut self) -> Result<Vec<(String, String)>, Failure> {
        self.conn
            .query("SELECT `key`, `value` FROM identity_provider")
            .map_err(|e| db_failure("reading identity_provider", e))
    }

    /// The underlying connection, for the sync's own queries.
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

enum Retry {
    Again,
    Fail(Failure),
}

impl Retry {
    fn from_db(what: &str, e: mysql::Error) -> Retry {
        match mysql_code(&e) {
            Some(ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT) => Retry::Again,
            _ => Retry::Fail(db_failure(what, e)),
        }
    }
}

/// mailcow's UI settings (`identity_provider` rows) in this tool's terms.
/// Rows of other providers are ignored; so is everything when the provider
/// in use is not LDAP. Booleans are stored as "1" / "" (or "0").
pub fn ui_settings(rows: &[(String, String)]) -> Result<UiSettings, String> {
    let get = |k: &str| {
        rows.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.trim().to_owned())
    };
    let mut ui = UiSettings::default();
    if get("authsource").as_deref() != Some("ldap") {
        return Ok(ui);
    }
    let flag = |k: &str| get(k).map(|v| matches!(v.as_str(), "1" | "true" | "on" | "yes"));
    let text = |k: &str| get(k).filter(|v| !v.is_empty());
    let number = |k: &str| -> Result<Option<u64>, String> {
        match text(k) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("identity_provider row {k} = \"{v}\" is not a number")),
        }
    };
    ui.ldap = RawLdap {
        hosts: text("host").map(HostList::One),
        port: number("port")?
            .map(|p| {
                u16::try_from(p).map_err(|_| format!("identity_provider port {p} out of range"))
            })
            .transpose()?,
        use_ssl: flag("use_ssl"),
        use_tls: flag("use_tls"),
        ignore_ssl_errors: flag("ignore_ssl_error").or_else(|| flag("ignore_ssl_errors")),
        base_dn: text("basedn"),
        username_field: text("username_field"),
        filter: get("filter"),
        attribute_field: text("attribute_field"),
        bind_dn: text("binddn"),
        bind_password: text("bindpass").map(crate::secret::Secret::new),
        ..RawLdap::default()
    };
    let list = |k: &str| -> Result<Vec<String>, String> {
        let Some(v) = text(k) else {
            return Ok(Vec::new());
        };
        let parsed: Value = serde_json::from_str(&v)
            .map_err(|e| format!("identity_provider row {k} is not JSON: {e}"))?;
        let items: Vec<&Value> = match &parsed {
            Value::Array(a) => a.iter().collect(),
            // array_filter() in PHP can leave an object with numeric keys.
            Value::Object(o) => {
                let mut kv: Vec<(u64, &Value)> = o
                    .iter()
                    .map(|(k, v)| (k.parse().unwrap_or(u64::MAX), v))
                    .collect();
                kv.sort_by_key(|(k, _)| *k);
                kv.into_iter().map(|(_, v)| v).collect()
            }
            _ => return Err(format!("identity_provider row {k} is not a list")),
        };
        Ok(items
            .into_iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect())
    };
    let mappers = list("mappers")?;
    let templates = list("templates")?;
    if mappers.len() != templates.len() {
        return Err("identity_provider rows mappers and templates differ in length".into());
    }
    if !mappers.is_empty() {
        ui.mappings = Some(
            mappers
                .into_iter()
                .zip(templates)
                .map(|(attribute, template)| RawMapping {
                    attribute,
                    template,
                })
                .collect(),
        );
    }
    ui.provisioning.default_template = text("default_template");
    // The UI's "Auto-create users on login": PHP's boolval() of the row, on
    // when there is none (identity_provider('get') in mailcow's
    // functions.inc.php). It stops creation at login only: mailcow's sync
    // (crons/ldap-sync.php) imports on `import_users` alone, and so does ours.
    ui.provisioning.login_provisioning = get("login_provisioning").map(|v| php_boolval(&v));
    ui.sync = RawSync {
        import_users: flag("import_users"),
        periodic_full_sync: flag("periodic_sync"),
        interval_minutes: number("sync_interval")?,
        ..RawSync::default()
    };
    Ok(ui)
}

/// PHP's `boolval()` of a string: false for "" and "0", true otherwise.
fn php_boolval(v: &str) -> bool {
    !matches!(v, "" | "0")
}

/// Load the configuration, merging mailcow's UI settings from the database
/// when `settings_from_database` is on. Returns the open store too, so a login
/// does not connect twice. Every problem is temporary (exit 111).
pub fn load_config(
    path: &std::path::Path,
    deadline: Instant,
) -> Result<(Config, Option<Store>), Failure> {
    let raw = config::load_raw(path).map_err(|e| Failure::Temporary(e.to_string()))?;
    if !raw.settings_from_database() {
        let cfg = raw
            .validate(path, UiSettings::default())
            .map_err(|e| Failure::Temporary(e.to_string()))?;
        return Ok((cfg, None));
    }
    let db = config::validate_database(path, raw.database.clone().unwrap_or_default())
        .map_err(|e| Failure::Temporary(e.to_string()))?;
    let mut store = Store::connect(&db, deadline)?;
    let rows = store.identity_provider_rows()?;
    let ui = ui_settings(&rows)
        .map_err(|e| Failure::Temporary(format!("config from mailcow's database: {e}")))?;
    let cfg = raw.validate(path, ui).map_err(|e| {
        Failure::Temporary(format!(
            "{e} (settings_from_database: keys not in the file come from mailcow's UI)"
        ))
    })?;
    Ok((cfg, Some(store)))
}

/// What `serve` runs on: the configuration, the `identity_provider` rows it
/// was made from (with `settings_from_database`), and whether mailcow's UI has
/// the LDAP provider switched off.
pub struct ServeSettings {
    pub cfg: Config,
    pub rows: Option<Vec<(String, String)>>,
    /// `authsource` of mailcow's Identity Provider when it is not `ldap`
    /// (`""` when none is set): serve then answers "not ours" to every login.
    pub provider_off: Option<String>,
}

/// Like [`load_config`], for `serve`: with `settings_from_database`, mailcow's
/// UI may also have the LDAP provider switched off. The file must still be
/// valid then; its directory settings are not used, and where the file leaves
/// them out a placeholder no connection is ever made to stands in.
pub fn load_serve_config(
    path: &std::path::Path,
    deadline: Instant,
) -> Result<ServeSettings, Failure> {
    let raw = config::load_raw(path).map_err(|e| Failure::Temporary(e.to_string()))?;
    if !raw.settings_from_database() {
        let cfg = raw
            .validate(path, UiSettings::default())
            .map_err(|e| Failure::Temporary(e.to_string()))?;
        return Ok(ServeSettings {
            cfg,
            rows: None,
            provider_off: None,
        });
    }
    let db = config::validate_database(path, raw.database.clone().unwrap_or_default())
        .map_err(|e| Failure::Temporary(e.to_string()))?;
    let rows = read_identity_provider(&db, deadline)?;
    let source = identity_provider_source(&rows);
    let (ui, provider_off) = if source == "ldap" {
        let ui = ui_settings(&rows)
            .map_err(|e| Failure::Temporary(format!("config from mailcow's database: {e}")))?;
        (ui, None)
    } else {
        let mut ui = UiSettings::default();
        ui.ldap.hosts = Some(HostList::One(
            "identity-provider-is-not-ldap.invalid".into(),
        ));
        ui.ldap.base_dn = Some("dc=invalid".into());
        (ui, Some(source))
    };
    let cfg = raw.validate(path, ui).map_err(|e| {
        Failure::Temporary(format!(
            "{e} (settings_from_database: keys not in the file come from mailcow's UI)"
        ))
    })?;
    Ok(ServeSettings {
        cfg,
        rows: Some(rows),
        provider_off,
    })
}

/// mailcow's `identity_provider` rows, on a connection of their own.
pub fn read_identity_provider(
    db: &DatabaseConfig,
    deadline: Instant,
) -> Result<Vec<(String, String)>, Failure> {
    let mut store = Store::connect(db, deadline)?;
    let mut rows = store.identity_provider_rows()?;
    rows.sort();
    Ok(rows)
}

/// Whether mailcow's own LDAP sync runs: its `crons/ldap-sync.php`
/// (mailcow-dockerized, `data/conf/phpfpm/crons/ldap-sync.php`, started every
/// minute by ofelia in php-fpm) goes on exactly when `authsource` is `ldap` and
/// `intval(periodic_sync)` or `intval(import_users)` is 1.
pub fn mailcow_sync_on(rows: &[(String, String)]) -> bool {
    // PHP's intval(): the leading digits of the trimmed text, 0 without any.
    let intval = |k: &str| {
        rows.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| {
                let v = v.trim();
                let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().unwrap_or(0)
            })
            .unwrap_or(0)
    };
    identity_provider_source(rows) == "ldap"
        && (intval("periodic_sync") == 1 || intval("import_users") == 1)
}

/// The `authsource` row: which identity provider mailcow's UI has chosen.
pub fn identity_provider_source(rows: &[(String, String)]) -> String {
    rows.iter()
        .find(|(k, _)| k == "authsource")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_password_flags() {
        let mut a = AppPassword {
            id: 1,
            hash: String::new(),
            active: true,
            flags: [
                ("imap_access", true),
                ("pop3_access", false),
                ("smtp_access", true),
                ("sieve_access", false),
                ("dav_access", true),
                ("eas_access", true),
            ],
        };
        assert!(a.allows(None));
        assert!(a.allows(Some("imap_access")));
        assert!(!a.allows(Some("pop3_access")));
        assert!(!a.allows(Some("sogo_access")), "no such column: refused");
        a.flags[0].1 = false;
        assert!(!a.allows(Some("imap_access")));
    }

    fn rows(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn mailcow_sync_on_as_its_cron_decides() {
        let on = |v: &[(&str, &str)]| mailcow_sync_on(&rows(v));
        assert!(on(&[("authsource", "ldap"), ("import_users", "1")]));
        assert!(on(&[
            ("authsource", "ldap"),
            ("periodic_sync", "1"),
            ("import_users", "")
        ]));
        assert!(!on(&[
            ("authsource", "ldap"),
            ("periodic_sync", "0"),
            ("import_users", "")
        ]));
        assert!(!on(&[("authsource", "keycloak"), ("import_users", "1")]));
        assert!(!on(&[("import_users", "1")]), "no provider chosen");
        // intval("true") is 0 in PHP: mailcow's cron does not run on it.
        assert!(!on(&[("authsource", "ldap"), ("import_users", "true")]));
    }

    #[test]
    fn ui_rows_become_settings() {
        let ui = ui_settings(&rows(&[
            ("authsource", "ldap"),
            ("host", "a,b"),
            ("port", "389"),
            ("use_ssl", "1"),
            ("use_tls", ""),
            ("ignore_ssl_error", ""),
            ("basedn", "dc=x"),
            ("username_field", "mail"),
            ("filter", ""),
            ("attribute_field", "othermailbox"),
            ("binddn", "cn=r"),
            ("bindpass", "pw"),
            ("mappers", "[\"staff\",\"default\"]"),
            ("templates", "{\"0\":\"Staff\",\"2\":\"Default\"}"),
            ("default_template", ""),
            ("import_users", "1"),
            ("periodic_sync", "0"),
            ("sync_interval", "5"),
            ("access_token", ""),
        ]))
        .unwrap();
        assert!(matches!(ui.ldap.hosts, Some(HostList::One(ref h)) if h == "a,b"));
        assert_eq!(ui.ldap.use_ssl, Some(true));
        assert_eq!(ui.ldap.use_tls, Some(false));
        assert_eq!(ui.ldap.ignore_ssl_errors, Some(false));
        assert_eq!(
            ui.ldap.bind_password.as_ref().map(|p| p.expose()),
            Some("pw")
        );
        let m = ui.mappings.unwrap();
        assert_eq!(
            (m[1].attribute.as_str(), m[1].template.as_str()),
            ("default", "Default")
        );
        assert_eq!(ui.provisioning.default_template, None);
        assert_eq!(ui.provisioning.login_provisioning, None, "no row: on");
        let off = |v: &str| {
            ui_settings(&rows(&[("authsource", "ldap"), ("login_provisioning", v)]))
                .unwrap()
                .provisioning
                .login_provisioning
        };
        assert_eq!(off("0"), Some(false));
        assert_eq!(off(""), Some(false));
        assert_eq!(off("1"), Some(true));
        assert_eq!(ui.sync.import_users, Some(true));
        assert_eq!(ui.sync.periodic_full_sync, Some(false));
        assert_eq!(ui.sync.interval_minutes, Some(5));
    }

    #[test]
    fn database_errors_in_words() {
        let e = |code: u16, message: &str| {
            describe(&mysql::Error::MySqlError(mysql::MySqlError {
                state: "08004".into(),
                message: message.into(),
                code,
            }))
        };
        let many = e(1040, "Too many connections");
        assert!(
            many.contains("max_connections") && !many.contains("MySqlError"),
            "{many}"
        );
        assert!(e(1205, "Lock wait timeout exceeded").contains("innodb_lock_wait_timeout"));
        assert!(e(1045, "Access denied").contains("database.password"));
        let io = |kind| describe(&mysql::Error::IoError(std::io::Error::from(kind)));
        assert!(io(std::io::ErrorKind::WouldBlock).contains("database.timeout_ms"));
        assert!(io(std::io::ErrorKind::ConnectionRefused).contains("database.port"));
    }

    #[test]
    fn other_providers_and_bad_rows() {
        let ui = ui_settings(&rows(&[("authsource", "keycloak"), ("host", "x")])).unwrap();
        assert!(ui.ldap.hosts.is_none());
        assert!(ui_settings(&rows(&[("authsource", "ldap"), ("port", "x")])).is_err());
        assert!(ui_settings(&rows(&[
            ("authsource", "ldap"),
            ("mappers", "[\"a\"]"),
            ("templates", "[]")
        ]))
        .is_err());
        assert!(ui_settings(&rows(&[("authsource", "ldap"), ("mappers", "nope")])).is_err());
    }
}
