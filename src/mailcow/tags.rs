//! `tags_mailbox`: a mailbox's tags.

use mysql::prelude::Queryable;

/// Add `tags` to the mailbox; none is removed (an admin's own tag and a tag
/// dropped from the template stay, as with mailcow's mailbox('edit',
/// 'mailbox'): an INSERT per tag, no DELETE).
pub(super) fn add<Q: Queryable>(
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
