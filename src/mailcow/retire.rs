//! `retire`: a retiring directory value (`[[attribute_mapping]]` with an
//! `action`) applied to an `ldap` mailbox, and undone when the value is gone.
//!
//! The same mechanism as the sync's deactivation of departed users
//! ([`super::DEACTIVATED_BY_SYNC`]): the tool records in `mailbox.attributes`
//! what it did, here [`RETIRED_BY_VALUE`] = the `active` it set ("2" or "0"),
//! and only ever undoes what carries its mark. A mailbox an admin set to 0 or
//! 2 (no mark) is never retired again nor reactivated; one whose `active` an
//! admin changed after the tool retired it (it no longer equals the mark) is
//! left as the admin set it.

use super::error::StoreError;
use super::{alias, sogo, Store};
use crate::config::Retire;
use crate::outcome::Failure;
use mysql::prelude::Queryable;
use mysql::TxOpts;

/// The attribute key: the `active` value the tool set for a retiring value.
pub const RETIRED_BY_VALUE: &str = "ldap_retired";

/// Where the `active` of the row is the tool's (1, or what the mark says)
/// and sync has not deactivated it as departed.
const OURS: &str = "authsource = 'ldap' \
     AND (active = 1 OR CAST(JSON_VALUE(attributes, '$.ldap_retired') AS SIGNED) <=> active) \
     AND COALESCE(JSON_VALUE(attributes, '$.ldap_sync_deactivated'), '') <> '1'";

impl Store {
    /// Set `active` as `action` says, with the mark, unless an admin set the
    /// mailbox's state or it already is so. Returns whether it changed now.
    pub fn retire(&mut self, username: &str, action: Retire) -> Result<bool, Failure> {
        let active = action.active();
        let sql = format!(
            "UPDATE mailbox SET active = ?, \
             attributes = JSON_SET(COALESCE(attributes, '{{}}'), '$.{RETIRED_BY_VALUE}', ?) \
             WHERE username = ? AND {OURS} \
             AND NOT (active = ? AND JSON_VALUE(attributes, '$.{RETIRED_BY_VALUE}') <=> ?)"
        );
        self.transaction("retiring a mailbox", TxOpts::default(), 1, |tx| {
            let mark = active.to_string();
            let hit = tx
                .exec_iter(sql.as_str(), (active, &mark, username, active, &mark))?
                .affected_rows()
                > 0;
            if hit {
                // "disallow_login" still receives mail: its own alias stays active.
                alias::set_own_active(tx, username, active != 0)?;
                sogo::refresh(tx, &[username])?;
            }
            Ok::<_, StoreError>(hit)
        })
    }

    /// The entry no longer has a retiring value: active 1 again, if the tool
    /// retired it and nobody changed `active` since. Returns whether it did.
    pub fn unretire(&mut self, username: &str) -> Result<bool, Failure> {
        let sql = format!(
            "UPDATE mailbox SET active = 1, attributes = JSON_REMOVE(attributes, '$.{RETIRED_BY_VALUE}') \
             WHERE username = ? AND JSON_VALUE(attributes, '$.{RETIRED_BY_VALUE}') IS NOT NULL AND {OURS}"
        );
        self.transaction(
            "reactivating a retired mailbox",
            TxOpts::default(),
            1,
            |tx| {
                let hit = tx.exec_iter(sql.as_str(), (username,))?.affected_rows() > 0;
                if hit {
                    alias::set_own_active(tx, username, true)?;
                    sogo::refresh(tx, &[username])?;
                }
                Ok::<_, StoreError>(hit)
            },
        )
    }
}
