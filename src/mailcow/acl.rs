//! `user_acl`: what a mailbox's user may change in mailcow's UI.

use mysql::prelude::Queryable;

/// The ACL row of `username`: `acl` (column, on) over the columns' defaults;
/// `replace` deletes the old row first (a template update sets every column
/// anew, as mailcow's acl('edit', 'user')).
pub(super) fn write<Q: Queryable>(
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
