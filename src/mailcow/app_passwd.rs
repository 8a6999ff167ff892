//! `app_passwd` and the mailbox's own SQL password: what a passdb login
//! (`[mailcow] passdb = "full"`) checks besides the directory.

use super::error::StoreError;
use super::mailbox::{mailbox_columns, MailboxRow};
use super::{row, Store};
use crate::outcome::Failure;

/// One row of mailcow's `app_passwd`.
#[derive(Debug, Clone)]
pub struct AppPassword {
    pub id: i64,
    pub hash: String,
    pub active: bool,
    /// The per-protocol flags, by column name.
    pub flags: [(&'static str, bool); 6],
}

/// The protocol flag columns of `app_passwd`, in the order they are read.
const FLAGS: [&str; 6] = [
    "imap_access",
    "pop3_access",
    "smtp_access",
    "sieve_access",
    "dav_access",
    "eas_access",
];

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

/// What a whole-passdb login reads before any bind ([`Store::login_mailbox`]).
pub struct LoginMailbox {
    pub row: MailboxRow,
    /// `mailbox.password`: the SQL password hash.
    pub hash: String,
    /// `mailbox.kind` (resources do not log in).
    pub kind: String,
    /// Every app password of the mailbox, active or not, by id.
    pub app_passwords: Vec<AppPassword>,
}

/// The mailbox with its domain's state, its SQL password and kind, and its
/// app passwords: one statement (one row per app password, or one without).
const SELECT_LOGIN_MAILBOX: &str = concat!(
    "SELECT ",
    mailbox_columns!(),
    ", m.password, m.kind, a.id, a.password, a.active, a.imap_access, a.pop3_access, a.smtp_access, \
     a.sieve_access, a.dav_access, a.eas_access \
     FROM mailbox m LEFT JOIN domain d ON d.domain = m.domain \
     LEFT JOIN app_passwd a ON a.mailbox = m.username WHERE m.username = ? ORDER BY a.id"
);

impl Store {
    /// Everything mailcow's passdb checks before the password, for the
    /// mailbox `username`, in one statement: the fewest round trips for a
    /// one-shot login, which pays each on a fresh connection.
    pub fn login_mailbox(&mut self, username: &str) -> Result<Option<LoginMailbox>, Failure> {
        self.on_conn("reading the mailbox", |c| {
            let mut found: Option<LoginMailbox> = None;
            for mut r in row::all(c, "mailbox", SELECT_LOGIN_MAILBOX, (username,))? {
                let row = MailboxRow::read_from(&mut r)?;
                let hash: Option<String> = r.next("password")?;
                let kind: Option<String> = r.next("kind")?;
                let login = found.get_or_insert_with(|| LoginMailbox {
                    row,
                    hash: hash.unwrap_or_default(),
                    kind: kind.unwrap_or_default(),
                    app_passwords: Vec::new(),
                });
                let mut r = r.with_table("app_passwd");
                if let Some(id) = r.next::<Option<i64>>("id")? {
                    login
                        .app_passwords
                        .push(read_app_password_after_id(id, &mut r)?);
                }
            }
            Ok(found)
        })
    }
}

/// The columns of an app password after its `id`.
fn read_app_password_after_id(id: i64, r: &mut row::Columns) -> Result<AppPassword, StoreError> {
    let hash = r.next("password")?;
    let active = r.next::<i64>("active")? == 1;
    let mut flags = FLAGS.map(|f| (f, false));
    for (name, on) in &mut flags {
        *on = r.next::<i64>(name)? == 1;
    }
    Ok(AppPassword {
        id,
        hash,
        active,
        flags,
    })
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
}
