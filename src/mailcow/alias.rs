//! `alias`: the mailbox's own alias (`address = goto = username`), and
//! whether an alias already holds a new mailbox's address.

use super::error::StoreError;
use super::row;
use mysql::prelude::Queryable;

/// The `goto` of the alias `address`, if there is one.
pub(super) fn target<Q: Queryable>(q: &mut Q, address: &str) -> Result<Option<String>, StoreError> {
    match row::first(
        q,
        "alias",
        "SELECT goto FROM alias WHERE address = ?",
        (address,),
    )? {
        Some(mut r) => Ok(Some(r.next("goto")?)),
        None => Ok(None),
    }
}

/// The mailbox's own alias, as mailbox('add', 'mailbox') writes it.
pub(super) fn insert_own<Q: Queryable>(
    q: &mut Q,
    username: &str,
    domain: &str,
    active: i64,
) -> Result<(), mysql::Error> {
    q.exec_drop(
        "INSERT INTO alias (address, goto, domain, active) VALUES (?, ?, ?, ?)",
        (username, username, domain, active),
    )
}

/// Switch the mailbox's own alias on or off (sync's deactivation and its undoing).
pub(super) fn set_own_active<Q: Queryable>(
    q: &mut Q,
    username: &str,
    active: bool,
) -> Result<(), mysql::Error> {
    q.exec_drop(
        "UPDATE alias SET active = ? WHERE address = ? AND goto = ?",
        (i64::from(active), username, username),
    )
}
