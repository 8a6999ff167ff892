//! `sasl_log`: the UI's "last login".

use super::Store;
use crate::outcome::Failure;
use mysql::prelude::Queryable;

impl Store {
    /// The row mailcow's `set_sasl_log()` (`data/web/inc/functions.inc.php`)
    /// writes on each successful login: it feeds the UI's "last login".
    /// `app_password` is the app password's id, 0 for the mailbox's own password.
    pub fn sasl_log(
        &mut self,
        username: &str,
        real_rip: &str,
        service: &str,
        app_password: i64,
    ) -> Result<(), Failure> {
        self.on_conn("writing sasl_log", |c| {
            Ok(c.exec_drop(
                "REPLACE INTO sasl_log (username, real_rip, service, app_password) VALUES (?, ?, ?, ?)",
                (username, real_rip, service, app_password),
            )?)
        })
    }
}
