//! What can go wrong in the store, and how each failure reaches the caller:
//! a database problem is a [`Failure::Temporary`] (an unreachable or slow
//! database must never look like a wrong password); the database refusing
//! one mailbox's data, or a row that cannot be written, is a
//! [`Failure::Denied`] of that mailbox only.

use crate::outcome::Failure;

/// MariaDB error codes the store acts on.
pub(super) const ER_DUP_ENTRY: u16 = 1062;
pub(super) const ER_LOCK_DEADLOCK: u16 = 1213;
pub(super) const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// Errors about the values of one row, not about the database: they fail
/// that mailbox only (data too long, incorrect string, out of range, NULL,
/// foreign key, invalid JSON, CHECK constraint).
const DATA_ERRORS: &[u16] = &[1406, 1366, 1264, 1048, 1452, 3140, 4025];

/// An error inside the store, before it is put in the caller's terms by
/// [`StoreError::failure`].
#[derive(Debug)]
pub(crate) enum StoreError {
    /// A statement failed; `what` says what it was doing, when more precise
    /// than the caller's words.
    Sql {
        what: Option<&'static str>,
        error: mysql::Error,
    },
    /// A column held a value this tool cannot read as the type mailcow's
    /// schema gives it (a changed schema, or a row written by hand).
    Column {
        table: &'static str,
        column: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    /// This mailbox cannot be written; nothing of it is kept.
    Refused(Failure),
    /// A concurrent change got in between: the whole transaction is tried again.
    Again,
}

impl From<mysql::Error> for StoreError {
    fn from(error: mysql::Error) -> StoreError {
        StoreError::Sql { what: None, error }
    }
}

/// `map_err(at("reading aliases"))`: a statement's error with its own words.
pub(super) fn at(what: &'static str) -> impl FnOnce(mysql::Error) -> StoreError {
    move |error| StoreError::Sql {
        what: Some(what),
        error,
    }
}

impl StoreError {
    /// The failure the caller gets; `what` is the caller's description of
    /// the whole operation.
    pub(crate) fn failure(self, what: &str) -> Failure {
        match self {
            StoreError::Sql { what: own, error } => db_failure(own.unwrap_or(what), error),
            StoreError::Column {
                table,
                column,
                expected,
                found,
            } => Failure::Temporary(format!(
                "database: {what}: mailcow's {table}.{column} holds {found} where {expected} was expected: is this mailcow's schema (tests/integration/schema.sql names the version), or was the row written by hand?"
            )),
            StoreError::Refused(f) => f,
            StoreError::Again => Failure::Temporary(format!("database: {what}: kept deadlocking")),
        }
    }

    /// `what` for a failed statement that has no words of its own.
    pub(super) fn context(self, what: &'static str) -> StoreError {
        match self {
            StoreError::Sql { what: None, error } => StoreError::Sql {
                what: Some(what),
                error,
            },
            other => other,
        }
    }

    /// Worth another try of the whole transaction: a deadlock, a lock wait
    /// that ran out, or [`StoreError::Again`].
    pub(super) fn retryable(&self) -> bool {
        match self {
            StoreError::Again => true,
            StoreError::Sql { error, .. } => matches!(
                mysql_code(error),
                Some(ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT)
            ),
            _ => false,
        }
    }

    /// About this mailbox's data, not the database: in a batch, only this
    /// mailbox fails.
    pub(super) fn is_refusal(&self) -> bool {
        match self {
            StoreError::Refused(_) => true,
            StoreError::Sql { error, .. } => {
                mysql_code(error).is_some_and(|c| DATA_ERRORS.contains(&c))
            }
            _ => false,
        }
    }
}

pub(super) fn db_failure(what: &str, e: mysql::Error) -> Failure {
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

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(super) fn mysql_code(e: &mysql::Error) -> Option<u16> {
    match e {
        mysql::Error::MySqlError(m) => Some(m.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn sql(code: u16) -> StoreError {
        StoreError::from(mysql::Error::MySqlError(mysql::MySqlError {
            state: "HY000".into(),
            message: "m".into(),
            code,
        }))
    }

    #[test]
    fn which_errors_retry_and_which_refuse_one_mailbox() {
        assert!(sql(ER_LOCK_DEADLOCK).retryable() && sql(ER_LOCK_WAIT_TIMEOUT).retryable());
        assert!(StoreError::Again.retryable());
        assert!(!sql(1045).retryable() && !sql(1406).retryable());
        assert!(sql(1406).is_refusal(), "data too long: this mailbox only");
        assert!(!sql(ER_LOCK_DEADLOCK).is_refusal());
        assert!(matches!(sql(1406).failure("x"), Failure::Denied(_)));
        assert!(matches!(sql(1045).failure("x"), Failure::Temporary(_)));
    }

    #[test]
    fn an_unexpected_column_type_is_temporary_and_named() {
        let f = StoreError::Column {
            table: "mailbox",
            column: "quota",
            expected: "an integer",
            found: "text",
        }
        .failure("reading the mailbox");
        let Failure::Temporary(text) = f else {
            panic!("not temporary: {f:?}")
        };
        assert!(
            text.contains("mailbox.quota") && text.contains("reading the mailbox"),
            "{text}"
        );
    }
}
