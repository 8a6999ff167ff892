//! The cluster-wide sync lock: MariaDB's `GET_LOCK`, one per database.

use super::{row, Store};
use crate::outcome::Failure;

/// The name of the cluster-wide sync lock: one per database, at most 64
/// characters (MariaDB's limit for lock names).
pub fn sync_lock_name(database: &str) -> String {
    format!("mailcow-ldap-auth sync {database}")
        .chars()
        .take(64)
        .collect()
}

impl Store {
    /// Try to take the lock that keeps syncs of every host apart (MariaDB
    /// `GET_LOCK`, held by this connection until it closes: the server lets
    /// it go if the holder dies). `Ok(false)`: another sync holds it.
    pub fn try_sync_lock(&mut self, database: &str) -> Result<bool, Failure> {
        let name = sync_lock_name(database);
        let got: Option<i64> = self.on_conn("taking the sync lock (GET_LOCK)", |c| {
            match row::first(c, "GET_LOCK", "SELECT GET_LOCK(?, 0)", (&name,))? {
                Some(mut r) => r.next("result"),
                None => Ok(None),
            }
        })?;
        match got {
            Some(1) => Ok(true),
            Some(_) => Ok(false),
            None => Err(Failure::Temporary(format!(
                "database: GET_LOCK('{name}') failed"
            ))),
        }
    }
}
