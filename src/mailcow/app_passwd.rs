//! `app_passwd` and the mailbox's own SQL password: what a passdb login
//! (`[mailcow] passdb = "full"`) checks besides the directory.

use super::error::StoreError;
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

impl Store {
    /// Every app password of a mailbox, active or not (mailcow's `app_passwd`).
    pub fn app_passwords(&mut self, mailbox: &str) -> Result<Vec<AppPassword>, Failure> {
        self.on_conn("reading the app passwords", |c| {
            let rows = row::all(
                c,
                "app_passwd",
                "SELECT id, password, active, imap_access, pop3_access, smtp_access, sieve_access, dav_access, eas_access \
                 FROM app_passwd WHERE mailbox = ? ORDER BY id",
                (mailbox,),
            )?;
            rows.into_iter().map(read_app_password).collect()
        })
    }

    /// The SQL password hash (`mailbox.password`) and `kind` of a mailbox.
    pub fn mailbox_secret(&mut self, username: &str) -> Result<Option<(String, String)>, Failure> {
        self.on_conn("reading the mailbox password", |c| {
            let sql = "SELECT password, kind FROM mailbox WHERE username = ?";
            let Some(mut r) = row::first(c, "mailbox", sql, (username,))? else {
                return Ok(None);
            };
            Ok(Some((r.next("password")?, r.next("kind")?)))
        })
    }
}

fn read_app_password(mut r: row::Columns) -> Result<AppPassword, StoreError> {
    let id = r.next("id")?;
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
