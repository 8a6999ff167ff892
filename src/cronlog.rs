//! mailcow's "Crontasks" log: JSON lines LPUSHed to the Redis list
//! `CRON_LOG` (`{"time", "priority", "task": "LDAP Sync (mailcow-ldap-auth)", "message"}`), the
//! list mailcow's UI shows under System > Information > Logs > Crontasks.
//!
//! Also mailcow's rate limits (`RL_VALUE`). Through the `redis` crate (sync
//! API, plain TCP as mailcow's Redis listens, no default features): AUTH and
//! SELECT from `mailcow.redis_url`, then LPUSH / HSET / HDEL. Redis being
//! down never fails a sync or a login: the first error is reported once, and
//! the log goes on to syslog/stderr only.

use crate::log::{self, Level};
use crate::secret::Secret;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use std::time::Duration;

/// Connect, AUTH and every command: each bounded by this.
const TIMEOUT: Duration = Duration::from_secs(2);

pub const LIST: &str = "CRON_LOG";

/// A mailbox's entry in mailcow's Redis hash `RL_VALUE`, as
/// `ratelimit('edit', 'mailbox', ...)` (functions.ratelimit.inc.php) writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimit {
    /// `HSET RL_VALUE <mailbox> "<n> / 1<frame>"`.
    Set(String),
    /// `HDEL RL_VALUE <mailbox>`: the template's `rl_value` is empty or 0.
    Clear,
}
/// Told apart from mailcow's own sync, which logs as "LDAP Sync"
/// (`data/conf/phpfpm/crons/ldap-sync.php`, `logMsg()`).
pub const TASK: &str = "LDAP Sync (mailcow-ldap-auth)";

/// Parsed `redis://[[user]:password@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

pub fn parse_url(url: &str) -> Result<RedisTarget, String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| "mailcow.redis_url must start with redis://".to_owned())?;
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let (user, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_owned()), Some(p.to_owned())),
            None => (None, Some(a.to_owned())),
        },
    };
    let (hostport, db) = match hostpart.split_once('/') {
        Some((h, d)) if !d.is_empty() => (
            h,
            d.parse()
                .map_err(|_| format!("mailcow.redis_url: database \"{d}\" is not a number"))?,
        ),
        Some((h, _)) => (h, 0),
        None => (hostpart, 0),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h.trim_matches(|c| c == '[' || c == ']').to_owned(),
            p.parse()
                .map_err(|_| format!("mailcow.redis_url: port \"{p}\" is not a number"))?,
        ),
        _ => (hostport.to_owned(), 6379),
    };
    if host.is_empty() {
        return Err("mailcow.redis_url has no host".into());
    }
    Ok(RedisTarget {
        host,
        port,
        user,
        password,
        db,
    })
}

/// One CRON_LOG entry as mailcow's PHP writes it.
pub fn entry_json(time: u64, priority: &str, message: &str) -> String {
    serde_json::json!({ "time": time, "priority": priority, "task": TASK, "message": message })
        .to_string()
}

/// A connection to mailcow's Redis.
struct Conn(redis::Connection);

impl Conn {
    fn open(t: &RedisTarget) -> Result<Conn, String> {
        // No CLIENT SETINFO at connect: AUTH and SELECT only, as mailcow's PHP.
        let mut settings = RedisConnectionInfo::default()
            .set_db(i64::from(t.db))
            .set_skip_set_lib_name();
        if let Some(u) = &t.user {
            settings = settings.set_username(u);
        }
        if let Some(p) = &t.password {
            settings = settings.set_password(p);
        }
        let info = ConnectionAddr::Tcp(t.host.clone(), t.port)
            .into_connection_info()
            .map_err(|e| e.to_string())?
            .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        let c = client
            .get_connection_with_timeout(TIMEOUT)
            .map_err(|e| format!("connect {}:{}: {e}", t.host, t.port))?;
        c.set_read_timeout(Some(TIMEOUT))
            .and_then(|()| c.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| e.to_string())?;
        Ok(Conn(c))
    }

    fn call(&mut self, args: &[&str]) -> Result<(), String> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.exec(&mut self.0)
            .map_err(|e| format!("redis says: {e}"))
    }
}

/// The Redis hash of mailcow's rate limits (`RL_VALUE`: mailbox or domain ->
/// "<n> / 1<frame>"), read by its rspamd rate-limit plugin.
pub const RL_HASH: &str = "RL_VALUE";

/// Whether "no Redis: template rate limits are not applied" was said in this process.
static NO_REDIS_SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Write a template's rate limit for `mailbox` into mailcow's Redis, as
/// mailcow's `ratelimit('edit', 'mailbox', ...)` does. Never fails the
/// caller: without `mailcow.redis_url` it says once per process that
/// template rate limits are not applied; a Redis error is returned for the
/// caller to log.
pub fn write_rate_limit(
    redis_url: Option<&Secret>,
    mailbox: &str,
    rl: &RateLimit,
) -> Result<(), String> {
    let Some(url) = redis_url else {
        if matches!(rl, RateLimit::Set(_))
            && !NO_REDIS_SAID.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            log::warn(
                "template rate limits (rl_value / rl_frame) are not applied: no mailcow.redis_url is set",
            );
        }
        return Ok(());
    };
    let target = parse_url(url.expose())?;
    let mut c = Conn::open(&target)?;
    match rl {
        RateLimit::Set(v) => c.call(&["HSET", RL_HASH, mailbox, v]),
        RateLimit::Clear => c.call(&["HDEL", RL_HASH, mailbox]),
    }
}

/// Where sync messages go: always the system log, and CRON_LOG when configured.
pub struct CronLog {
    target: Option<RedisTarget>,
    conn: Option<Conn>,
    failed: bool,
    /// Also print each line on stdout (interactive runs).
    pub echo: bool,
}

impl CronLog {
    pub fn new(redis_url: Option<&Secret>) -> CronLog {
        let mut failed = false;
        let target = match redis_url.map(|u| parse_url(u.expose())) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                log::warn(&format!("CRON_LOG disabled: {e}"));
                failed = true;
                None
            }
        };
        CronLog {
            target,
            conn: None,
            failed,
            echo: false,
        }
    }

    /// A line for every sink. Redis problems are reported once, then ignored.
    pub fn line(&mut self, level: Level, message: &str) {
        log::line(level, &format!("sync: {message}"));
        if self.echo {
            println!("{}", log::one_line(message));
        }
        let Some(target) = &self.target else { return };
        if self.failed {
            return;
        }
        let priority = match level {
            Level::Info => "info",
            Level::Warning => "warning",
            // mailcow's own crons log "err" (crons/ldap-sync.php `logMsg("err", ...)`),
            // and its UI badges emerg/alert/crit/err in red.
            Level::Error => "err",
        };
        let json = entry_json(crate::health::unix_now(), priority, message);
        let res = match &mut self.conn {
            Some(c) => c.call(&["LPUSH", LIST, &json]),
            None => Conn::open(target).and_then(|mut c| {
                c.call(&["LPUSH", LIST, &json])?;
                self.conn = Some(c);
                Ok(())
            }),
        };
        if let Err(e) = res {
            self.failed = true;
            self.conn = None;
            log::warn(&format!(
                "sync: cannot write to mailcow's CRON_LOG at {}:{} ({e}); the sync goes on, logging to the system log only",
                target.host, target.port
            ));
        }
    }

    pub fn info(&mut self, m: &str) {
        self.line(Level::Info, m);
    }
    pub fn warn(&mut self, m: &str) {
        self.line(Level::Warning, m);
    }
    pub fn error(&mut self, m: &str) {
        self.line(Level::Error, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("redis://:s3cret@redis-mailcow:6379/0").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.password.as_deref(), t.user, t.db),
            ("redis-mailcow", 6379, Some("s3cret"), None, 0)
        );
        let t = parse_url("redis://127.0.0.1").unwrap();
        assert_eq!((t.port, t.password), (6379, None));
        let t = parse_url("redis://u:p@h:1/3").unwrap();
        assert_eq!(
            (t.user.as_deref(), t.password.as_deref(), t.port, t.db),
            (Some("u"), Some("p"), 1, 3)
        );
        let t = parse_url("redis://p@w:rd@h").unwrap();
        assert_eq!((t.host.as_str(), t.password.as_deref()), ("h", Some("rd")));
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("redis://h:x").is_err());
    }

    #[test]
    fn entries_as_mailcow_writes_them() {
        let j: serde_json::Value =
            serde_json::from_str(&entry_json(5, "info", "hi \"x\"")).unwrap();
        assert_eq!(j["time"], 5);
        assert_eq!(j["priority"], "info");
        assert_eq!(j["task"], "LDAP Sync (mailcow-ldap-auth)");
        assert_eq!(j["message"], "hi \"x\"");
    }
}
