//! A new mailbox and everything that belongs to it (`mailbox`, `quota2`,
//! `quota2replica`, its own `alias`, `user_acl`, `tags_mailbox`, SOGo's
//! row), created in one transaction under the locked domain row.
//!
//! What a creation writes is decided by the pure [`plan_creation`] from what
//! was read under the lock; [`Store::create_mailboxes`] only reads and writes.

use super::domain::{self, check_domain_room, DomainRow};
use super::error::{mysql_code, StoreError, ER_DUP_ENTRY};
use super::{acl, alias, mailbox, quota, sogo, tags, Store};
use crate::outcome::Failure;
use mysql::prelude::Queryable;
use mysql::{params, IsolationLevel, Transaction, TxOpts};
use serde_json::{Map, Value};

/// A mailbox to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMailbox {
    pub username: String,
    pub local_part: String,
    pub domain: String,
    pub name: String,
    pub attributes: Map<String, Value>,
    pub active: i64,
    /// Template quota in bytes; 0 = the domain's default quota.
    pub template_quota: u64,
    pub acl: Vec<(String, bool)>,
    pub tags: Vec<String>,
    pub template: String,
    /// The template's rate limit for mailcow's Redis (`None`: leave it).
    pub rate_limit: Option<crate::cronlog::RateLimit>,
}

impl NewMailbox {
    pub fn attributes_json(&self) -> String {
        Value::Object(self.attributes.clone()).to_string()
    }
}

/// What a creation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Created,
    /// Another login or sync created it first; it is there now.
    AlreadyThere,
}

/// What creating a mailbox comes to, decided from what was read under the
/// domain's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreationPlan {
    /// Another login or sync created it while we waited for the lock.
    AlreadyThere,
    /// Write the mailbox's rows, with this quota (bytes).
    Write { quota: u64 },
}

/// The pure decision of a creation: `exists` (the mailbox is there now),
/// `alias_goto` (an alias already holds the address), the locked `domain`
/// row with the running totals of the batch. A refusal names the fix.
pub fn plan_creation(
    new: &NewMailbox,
    exists: bool,
    alias_goto: Option<&str>,
    domain: Option<&DomainRow>,
) -> Result<CreationPlan, Failure> {
    if exists {
        return Ok(CreationPlan::AlreadyThere);
    }
    let quota = check_domain_room(&new.domain, new.template_quota, domain)?;
    if let Some(goto) = alias_goto {
        return Err(Failure::Denied(format!(
            "an alias {} -> {goto} already exists in mailcow; remove it to let the mailbox be created",
            new.username
        )));
    }
    Ok(CreationPlan::Write { quota })
}

impl Store {
    /// Create a mailbox and everything that belongs to it in one transaction,
    /// with the domain row locked so that limits hold under concurrency.
    /// The locked domain row decides whether the creation may go ahead and
    /// with which quota ([`plan_creation`]); any failure rolls everything back.
    pub fn create_mailbox(&mut self, new: &NewMailbox) -> Result<Created, Failure> {
        let mut results = self.create_mailboxes(&[new])?;
        results.pop().unwrap_or(Err(Failure::Temporary(
            "database: nothing was created".into(),
        )))
    }

    /// Create mailboxes of ONE domain in one transaction: the domain row is
    /// locked and its mailboxes counted once, each mailbox gets a savepoint
    /// (a refused one rolls back alone), and limits are checked against the
    /// running totals. Returns one result per mailbox; `Err` when the database
    /// failed and nothing was written. A deadlock, or a concurrent creation
    /// of one of them, tries the whole batch again (three times at most).
    pub fn create_mailboxes(
        &mut self,
        news: &[&NewMailbox],
    ) -> Result<Vec<Result<Created, Failure>>, Failure> {
        let Some(first) = news.first() else {
            return Ok(Vec::new());
        };
        if news.iter().any(|n| n.domain != first.domain) {
            return Err(Failure::Temporary("internal: one domain per batch".into()));
        }
        let opts = TxOpts::default().set_isolation_level(Some(IsolationLevel::ReadCommitted));
        match self.transaction("creating the mailbox", opts, 3, |tx| batch(tx, news)) {
            // The only mailbox of the batch was refused: nothing of it is kept.
            Err(f @ (Failure::Denied(_) | Failure::BadRequest(_))) if news.len() == 1 => {
                Ok(vec![Err(f)])
            }
            other => other,
        }
    }
}

fn batch(
    tx: &mut Transaction<'_>,
    news: &[&NewMailbox],
) -> Result<Vec<Result<Created, Failure>>, StoreError> {
    let mut domain = domain::read(tx, &news[0].domain, true)?;
    let savepoint = news.len() > 1;
    let mut results = Vec::with_capacity(news.len());
    for new in news {
        if savepoint {
            tx.query_drop("SAVEPOINT one_mailbox")
                .map_err(super::error::at("a savepoint"))?;
        }
        match create_one(tx, new, domain.as_ref()) {
            Ok(CreationPlan::Write { quota }) => {
                if let Some(d) = domain.as_mut() {
                    d.mailbox_count += 1;
                    d.quota_used_bytes += quota;
                }
                results.push(Ok(Created::Created));
            }
            Ok(CreationPlan::AlreadyThere) => results.push(Ok(Created::AlreadyThere)),
            Err(e) if savepoint && e.is_refusal() => {
                tx.query_drop("ROLLBACK TO SAVEPOINT one_mailbox")
                    .map_err(super::error::at("rolling back one mailbox"))?;
                results.push(Err(e.failure("creating the mailbox")));
                continue;
            }
            // The database failed, or the only mailbox was refused: nothing
            // of this batch is kept.
            Err(e) => return Err(e),
        }
        if savepoint {
            tx.query_drop("RELEASE SAVEPOINT one_mailbox")
                .map_err(super::error::at("a savepoint"))?;
        }
    }
    // SOGo's rows of the new mailboxes, in the same transaction: one look at
    // the aliases for the whole batch.
    let created: Vec<&str> = news
        .iter()
        .zip(&results)
        .filter(|(_, r)| matches!(r, Ok(Created::Created)))
        .map(|(n, _)| n.username.as_str())
        .collect();
    sogo::refresh(tx, &created)
        .map_err(|e| e.context("writing SOGo's rows (_sogo_static_view)"))?;
    Ok(results)
}

/// One mailbox inside the batch's transaction: read, plan, write. A refusal
/// has written nothing of it (the caller rolls back to its savepoint).
fn create_one(
    tx: &mut Transaction<'_>,
    new: &NewMailbox,
    domain: Option<&DomainRow>,
) -> Result<CreationPlan, StoreError> {
    let exists = mailbox::read(tx, &new.username)?.is_some();
    let alias_goto = if exists {
        None
    } else {
        alias::target(tx, &new.username)?
    };
    let plan =
        plan_creation(new, exists, alias_goto.as_deref(), domain).map_err(StoreError::Refused)?;
    if let CreationPlan::Write { quota } = plan {
        write(tx, new, quota)?;
    }
    Ok(plan)
}

/// The rows of a planned creation.
fn write(tx: &mut Transaction<'_>, new: &NewMailbox, quota: u64) -> Result<(), StoreError> {
    let user = new.username.as_str();
    tx.exec_drop(
        "INSERT INTO mailbox (username, password, name, quota, local_part, domain, attributes, \
         authsource, active) VALUES (:username, '', :name, :quota, :local_part, :domain, :attributes, 'ldap', :active)",
        params! {
            "username" => user,
            "name" => &new.name,
            "quota" => quota,
            "local_part" => &new.local_part,
            "domain" => &new.domain,
            "attributes" => new.attributes_json(),
            "active" => new.active,
        },
    )
    .map_err(inserting("mailbox", user))?;
    quota::reset(tx, user).map_err(|(table, e)| inserting(table, user)(e))?;
    alias::insert_own(tx, user, &new.domain, new.active).map_err(inserting("alias", user))?;
    acl::write(tx, user, &new.acl, false).map_err(inserting("user_acl", user))?;
    tags::add(tx, user, &new.tags).map_err(inserting("tags_mailbox", user))?;
    Ok(())
}

/// A failed INSERT into `table`: a duplicate in the mailbox table is a
/// concurrent creation (the batch is tried again), in another a leftover row
/// of a mailbox removed by hand (this mailbox fails, the rest goes on).
fn inserting<'a>(
    table: &'static str,
    username: &'a str,
) -> impl FnOnce(mysql::Error) -> StoreError + 'a {
    move |e| {
        match mysql_code(&e) {
        Some(ER_DUP_ENTRY) if table == "mailbox" => StoreError::Again,
        Some(ER_DUP_ENTRY) => StoreError::Refused(Failure::Denied(format!(
            "a leftover row for {username} in mailcow's {table} table (of a mailbox removed by hand?): remove it to let the mailbox be created"
        ))),
        _ => super::error::at("creating the mailbox")(e),
    }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailcow::MIB;

    fn new(quota_mib: u64) -> NewMailbox {
        NewMailbox {
            username: "a@example.org".into(),
            local_part: "a".into(),
            domain: "example.org".into(),
            name: "A".into(),
            attributes: Map::new(),
            active: 1,
            template_quota: quota_mib * MIB,
            acl: Vec::new(),
            tags: Vec::new(),
            template: "Default".into(),
            rate_limit: None,
        }
    }

    fn domain(count: i64) -> DomainRow {
        DomainRow {
            domain: "example.org".into(),
            active: true,
            max_mailboxes: 2,
            defquota_mib: 3072,
            maxquota_mib: 10240,
            quota_mib: 20480,
            mailbox_count: count,
            quota_used_bytes: 0,
        }
    }

    #[test]
    fn a_creation_is_planned_from_what_the_lock_shows() {
        let d = domain(0);
        assert_eq!(
            plan_creation(&new(1024), false, None, Some(&d)),
            Ok(CreationPlan::Write { quota: 1024 * MIB })
        );
        // Quota 0 is unlimited, never the domain's default.
        assert_eq!(
            plan_creation(&new(0), false, None, Some(&d)),
            Ok(CreationPlan::Write { quota: 0 })
        );
        // Already there: nothing else matters, not even a full domain.
        assert_eq!(
            plan_creation(&new(1024), true, Some("x@example.org"), Some(&domain(2))),
            Ok(CreationPlan::AlreadyThere)
        );
    }

    #[test]
    fn refusals_name_the_fix() {
        let text = |r: Result<CreationPlan, Failure>| match r {
            Err(Failure::Denied(t)) => t,
            other => panic!("not refused: {other:?}"),
        };
        let alias = text(plan_creation(
            &new(1),
            false,
            Some("b@example.org"),
            Some(&domain(0)),
        ));
        assert!(
            alias.contains("a@example.org -> b@example.org") && alias.contains("remove it"),
            "{alias}"
        );
        let full = text(plan_creation(&new(1), false, None, Some(&domain(2))));
        assert!(full.contains("Max. possible mailboxes"), "{full}");
        let none = text(plan_creation(&new(1), false, None, None));
        assert!(none.contains("add it first"), "{none}");
        let big = text(plan_creation(&new(20000), false, None, Some(&domain(0))));
        assert!(big.contains("per-mailbox maximum"), "{big}");
    }

    #[test]
    fn a_leftover_row_refuses_one_mailbox_a_duplicate_mailbox_retries() {
        let dup = || {
            mysql::Error::MySqlError(mysql::MySqlError {
                state: "23000".into(),
                message: "Duplicate entry".into(),
                code: ER_DUP_ENTRY,
            })
        };
        assert!(matches!(
            inserting("mailbox", "a@x")(dup()),
            StoreError::Again
        ));
        let e = inserting("user_acl", "a@x")(dup());
        assert!(e.is_refusal());
        let Failure::Denied(t) = e.failure("creating the mailbox") else {
            panic!("not refused")
        };
        assert!(
            t.contains("leftover row for a@x in mailcow's user_acl table"),
            "{t}"
        );
    }
}
