//! `mailbox`: a mailbox as logins and the sync read it, a template applied
//! to it, and the sync's marks (missing from the directory, deactivated).

use super::error::StoreError;
use super::{alias, row, sogo, Store};
use crate::outcome::Failure;
use mysql::prelude::Queryable;
use mysql::{params, TxOpts};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Attribute keys the sync keeps in `mailbox.attributes`.
pub const MISSING_SINCE: &str = "ldap_missing_since";
pub const DEACTIVATED_BY_SYNC: &str = "ldap_sync_deactivated";

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

    /// The row as [`SELECT_MAILBOX`] reads it.
    fn read(mut r: row::Columns) -> Result<MailboxRow, StoreError> {
        Self::read_from(&mut r)
    }

    /// [`MailboxRow::read`] from the row's next columns, leaving the rest.
    pub(super) fn read_from(r: &mut row::Columns) -> Result<MailboxRow, StoreError> {
        let username = r.next("username")?;
        let name: Option<String> = r.next("name")?;
        let domain = r.next("domain")?;
        let active = r.next("active")?;
        let authsource: Option<String> = r.next("authsource")?;
        let quota: i64 = r.next("quota")?;
        let attributes: Option<String> = r.next("attributes")?;
        let domain_active: Option<i64> = r.next("domain.active")?;
        Ok(MailboxRow {
            username,
            name: name.unwrap_or_default(),
            domain,
            active,
            authsource: authsource.unwrap_or_else(|| "mailcow".into()),
            quota: quota.max(0) as u64,
            attributes: attributes
                .and_then(|t| serde_json::from_str::<Map<String, Value>>(&t).ok())
                .unwrap_or_default(),
            domain_active: domain_active.map(|a| a == 1),
        })
    }
}

/// The columns [`MailboxRow::read`] reads, in its order, from `mailbox m`
/// joined with `domain d` (a macro, so that other statements can be built
/// around them with `concat!`).
macro_rules! mailbox_columns {
    () => {
        "m.username, m.name, m.domain, m.active, m.authsource, m.quota, m.attributes, d.active"
    };
}
pub(super) use mailbox_columns;

/// The columns of a [`MailboxRow`]; a WHERE clause follows.
const SELECT_MAILBOX: &str = concat!(
    "SELECT ",
    mailbox_columns!(),
    " FROM mailbox m LEFT JOIN domain d ON d.domain = m.domain"
);

/// The mailbox `username`, inside a transaction or not.
pub(super) fn read<Q: Queryable>(
    q: &mut Q,
    username: &str,
) -> Result<Option<MailboxRow>, StoreError> {
    row::first(
        q,
        "mailbox",
        &format!("{SELECT_MAILBOX} WHERE m.username = ?"),
        (username,),
    )?
    .map(MailboxRow::read)
    .transpose()
}

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

/// Changes to an existing `ldap` mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxUpdate {
    pub username: String,
    pub name: String,
    pub quota: u64,
    pub attributes: Map<String, Value>,
    /// `None`: leave the ACL as it is (only the name changed).
    pub acl: Option<Vec<(String, bool)>>,
    pub tags: Option<Vec<String>>,
    pub rate_limit: Option<crate::cronlog::RateLimit>,
}

impl MailboxUpdate {
    pub fn attributes_json(&self) -> String {
        Value::Object(self.attributes.clone()).to_string()
    }
}

impl Store {
    /// The mailbox `username`, with its domain's state.
    pub fn mailbox(&mut self, username: &str) -> Result<Option<MailboxRow>, Failure> {
        self.on_conn("reading the mailbox", |c| read(c, username))
    }

    /// The mailboxes among `usernames` that exist, by lower-cased username.
    pub fn mailboxes(
        &mut self,
        usernames: &[String],
    ) -> Result<HashMap<String, MailboxRow>, Failure> {
        self.on_conn("reading mailboxes", |c| {
            let mut out = HashMap::new();
            for chunk in usernames.chunks(500) {
                let marks = vec!["?"; chunk.len()].join(",");
                let sql = format!("{SELECT_MAILBOX} WHERE m.username IN ({marks})");
                for r in row::all(c, "mailbox", &sql, chunk.to_vec())? {
                    let row = MailboxRow::read(r)?;
                    out.insert(row.username.to_lowercase(), row);
                }
            }
            Ok(out)
        })
    }

    /// Every `ldap` mailbox with its sync markers (for deprovisioning).
    pub fn ldap_mailboxes(&mut self) -> Result<Vec<LdapMailbox>, Failure> {
        self.on_conn("listing LDAP mailboxes", |c| {
            let sql = format!(
                "SELECT username, active, JSON_UNQUOTE(JSON_EXTRACT(attributes, '$.{MISSING_SINCE}')), \
                 JSON_UNQUOTE(JSON_EXTRACT(attributes, '$.{DEACTIVATED_BY_SYNC}')) FROM mailbox WHERE authsource = 'ldap'"
            );
            row::all_text(c, "mailbox", &sql)?
                .into_iter()
                .map(|mut r| {
                    let username = r.next("username")?;
                    let active = r.next("active")?;
                    let since: Option<String> = r.next(MISSING_SINCE)?;
                    let deact: Option<String> = r.next(DEACTIVATED_BY_SYNC)?;
                    Ok(LdapMailbox {
                        username,
                        active,
                        missing_since: since.and_then(|s| s.parse().ok()),
                        deactivated_by_sync: deact.as_deref() == Some("1"),
                    })
                })
                .collect()
        })
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
        let sql = format!(
            "UPDATE mailbox SET name = :name, quota = :quota, attributes = :attributes \
             WHERE username = :username AND authsource = 'ldap' AND {condition}"
        );
        self.transaction("updating the mailbox", TxOpts::default(), 1, |tx| {
            let hit = tx
                .exec_iter(
                    sql.as_str(),
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
                super::acl::write(tx, &upd.username, acl, true)?;
            }
            if let Some(tags) = &upd.tags {
                super::tags::add(tx, &upd.username, tags)?;
            }
            sogo::refresh(tx, &[upd.username.as_str()])?;
            Ok(true)
        })
    }

    /// Record that the mailbox's directory entry was not seen since `since`:
    /// only on an active mailbox not yet marked (the first mark counts) and
    /// not deactivated by sync. Returns whether it was marked now.
    pub fn mark_missing(&mut self, username: &str, since: u64) -> Result<bool, Failure> {
        self.on_conn("marking a mailbox missing", |c| {
            let r = c.exec_iter(
                format!(
                    "UPDATE mailbox SET attributes = JSON_SET(COALESCE(attributes, '{{}}'), '$.{MISSING_SINCE}', ?) \
                     WHERE username = ? AND authsource = 'ldap' AND active <> 0 \
                     AND JSON_VALUE(attributes, '$.{MISSING_SINCE}') IS NULL \
                     AND COALESCE(JSON_VALUE(attributes, '$.{DEACTIVATED_BY_SYNC}'), '') <> '1'"
                ),
                (since.to_string(), username),
            )?;
            Ok(r.affected_rows() > 0)
        })
    }

    /// Deactivate a departed user's mailbox (its own alias and the directory
    /// aliases this tool made for it too), marked as
    /// done by sync — only if, in the same statement, the "missing since"
    /// mark is still there and dates from `marked_before` or earlier: a run
    /// (or a login) that found the user present in the meantime has removed
    /// it, and a plan made from an older view must not undo that.
    /// Returns whether it was deactivated now.
    pub fn deactivate(&mut self, username: &str, marked_before: u64) -> Result<bool, Failure> {
        let sql = format!(
            "UPDATE mailbox SET active = 0, \
             attributes = JSON_SET(COALESCE(attributes, '{{}}'), '$.{DEACTIVATED_BY_SYNC}', '1') \
             WHERE username = ? AND authsource = 'ldap' AND active <> 0 \
             AND CAST(JSON_VALUE(attributes, '$.{MISSING_SINCE}') AS UNSIGNED) <= ?"
        );
        self.transaction("deactivating a mailbox", TxOpts::default(), 1, |tx| {
            let hit = tx
                .exec_iter(sql.as_str(), (username, marked_before))?
                .affected_rows()
                > 0;
            if hit {
                alias::set_own_active(tx, username, false)?;
                alias::set_ours_active(tx, username, false)?;
                sogo::refresh(tx, &[username])?;
            }
            Ok(hit)
        })
    }

    /// The user was found in the directory (by a sync run or a login): undo
    /// what sync did to the mailbox, in one transaction on the locked row —
    /// a deactivation by sync is reversed (never an admin's: those carry no
    /// sync mark), a "missing since" mark removed.
    pub fn found_present(&mut self, username: &str) -> Result<Presence, Failure> {
        self.transaction("marking a mailbox present", TxOpts::default(), 1, |tx| {
            let row = row::first(
                tx,
                "mailbox",
                &format!(
                    "SELECT JSON_VALUE(attributes, '$.{DEACTIVATED_BY_SYNC}'), JSON_VALUE(attributes, '$.{MISSING_SINCE}') \
                     FROM mailbox WHERE username = ? AND authsource = 'ldap' FOR UPDATE"
                ),
                (username,),
            )?;
            let Some(mut r) = row else {
                return Ok(Presence::Unchanged);
            };
            let deactivated: Option<String> = r.next(DEACTIVATED_BY_SYNC)?;
            let missing: Option<String> = r.next(MISSING_SINCE)?;
            if deactivated.as_deref() == Some("1") {
                tx.exec_drop(
                    format!(
                        "UPDATE mailbox SET active = 1, \
                         attributes = JSON_REMOVE(JSON_REMOVE(attributes, '$.{DEACTIVATED_BY_SYNC}'), '$.{MISSING_SINCE}') \
                         WHERE username = ?"
                    ),
                    (username,),
                )?;
                alias::set_own_active(tx, username, true)?;
                alias::set_ours_active(tx, username, true)?;
                sogo::refresh(tx, &[username])?;
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
        })
    }
}
