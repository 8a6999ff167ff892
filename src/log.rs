//! One line per event, to syslog (facility mail) or to stderr, which Dovecot
//! copies into its own log for checkpassword helpers.
//!
//! Nothing logged here ever contains a password: callers pass logins, hosts
//! and reasons only, and [`clean`] strips control characters from values
//! that came from a client.

use crate::config::LogTarget;
use once_cell::sync::OnceCell;
use std::io::Write;
use std::sync::Mutex;
use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

enum Sink {
    Syslog(Logger<LoggerBackend, Formatter3164>),
    Stderr,
}

static SINK: OnceCell<Mutex<Sink>> = OnceCell::new();

/// Choose where lines go. The first call wins; later calls are ignored.
pub fn init(target: LogTarget) {
    let _ = SINK.get_or_init(|| Mutex::new(open(target)));
}

fn open(target: LogTarget) -> Sink {
    if target == LogTarget::Stderr {
        return Sink::Stderr;
    }
    let formatter = Formatter3164 {
        facility: Facility::LOG_MAIL,
        hostname: None,
        process: "mailcow-ldap-auth".into(),
        pid: std::process::id(),
    };
    match syslog::unix(formatter) {
        Ok(l) => Sink::Syslog(l),
        // Auto and Syslog alike fall back to stderr: a line must never be lost.
        Err(_) => Sink::Stderr,
    }
}

/// Whether stdout is systemd's journal: `JOURNAL_STREAM` names its device
/// and inode (systemd.exec(5)), so a program's own log lines reach the
/// journal already and must not be printed a second time.
pub fn stdout_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/1").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// `msg` as exactly one line: control characters (a newline in a display
/// name or DN from the directory, say) escaped as `\xNN`, so that no value can
/// forge a line of its own. Done here, at the sink, for every message.
pub fn one_line(msg: &str) -> std::borrow::Cow<'_, str> {
    if !msg.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(msg);
    }
    let mut out = String::with_capacity(msg.len() + 8);
    for c in msg.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Write one line. Falls back to stderr if syslog refuses it.
pub fn line(level: Level, msg: &str) {
    let msg = &*one_line(msg);
    let sink = SINK.get_or_init(|| Mutex::new(open(LogTarget::Auto)));
    let mut guard = match sink.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let sent = match &mut *guard {
        Sink::Syslog(l) => match level {
            Level::Info => l.info(msg),
            Level::Warning => l.warning(msg),
            Level::Error => l.err(msg),
        }
        .is_ok(),
        Sink::Stderr => false,
    };
    if !sent {
        let word = match level {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        };
        // One write(2) per line, so that lines of concurrent helpers never interleave.
        let line = format!("mailcow-ldap-auth: {word}: {msg}\n");
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

pub fn info(msg: &str) {
    line(Level::Info, msg);
}

pub fn warn(msg: &str) {
    line(Level::Warning, msg);
}

pub fn error(msg: &str) {
    line(Level::Error, msg);
}

/// A client-supplied value made safe for one log line: control characters,
/// quotes and backslashes escaped, length bounded.
pub fn clean(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(256));
    for c in value.chars().take(256) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    if value.chars().count() > 256 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_escapes_what_could_forge_a_line() {
        assert_eq!(clean("a\nb"), "a\\x0ab");
        assert_eq!(clean("q\"x\\"), "q\\\"x\\\\");
        assert_eq!(clean("ünï"), "ünï");
        assert!(clean(&"x".repeat(300)).ends_with("..."));
    }

    #[test]
    fn every_message_is_one_line() {
        assert_eq!(one_line("plain \"q\" ü"), "plain \"q\" ü");
        assert_eq!(
            one_line("create a (name \"x\nsync: done: forged\")\r"),
            "create a (name \"x\\x0async: done: forged\")\\x0d"
        );
    }
}
