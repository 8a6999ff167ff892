//! `quota2` and `quota2replica`: Dovecot's usage counters of a mailbox.

use mysql::prelude::Queryable;

/// The counters of a new mailbox, at zero. A leftover row (of a mailbox
/// removed by hand) is reset, as mailbox('add', 'mailbox') in mailcow's
/// functions.mailbox.inc.php does (`INSERT ... ON DUPLICATE KEY UPDATE`).
/// On failure, the table that refused it.
pub(super) fn reset<Q: Queryable>(
    q: &mut Q,
    username: &str,
) -> Result<(), (&'static str, mysql::Error)> {
    for (table, sql) in [
        (
            "quota2",
            "INSERT INTO quota2 (username, bytes, messages) VALUES (?, 0, 0) \
             ON DUPLICATE KEY UPDATE bytes = 0, messages = 0",
        ),
        (
            "quota2replica",
            "INSERT INTO quota2replica (username, bytes, messages) VALUES (?, 0, 0) \
             ON DUPLICATE KEY UPDATE bytes = 0, messages = 0",
        ),
    ] {
        q.exec_drop(sql, (username,)).map_err(|e| (table, e))?;
    }
    Ok(())
}
