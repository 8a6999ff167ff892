//! `domain`: a domain's state and limits, and whether a new mailbox fits.

use super::error::StoreError;
use super::{row, Store};
use crate::outcome::Failure;
use mysql::prelude::Queryable;

pub const MIB: u64 = 1024 * 1024;

/// A domain's limits, as locked for a creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRow {
    pub domain: String,
    pub active: bool,
    /// "Max. possible mailboxes".
    pub max_mailboxes: i64,
    /// Default quota for a new mailbox, MiB.
    pub defquota_mib: u64,
    /// Largest quota of one mailbox, MiB.
    pub maxquota_mib: u64,
    /// Quota of the whole domain, MiB.
    pub quota_mib: u64,
    /// Mailboxes that exist now, and the sum of their quotas in bytes.
    pub mailbox_count: i64,
    pub quota_used_bytes: u64,
}

impl Store {
    /// A domain's state and limits, without locking (for diagnostics).
    pub fn domain(&mut self, domain: &str) -> Result<Option<DomainRow>, Failure> {
        self.on_conn("reading the domain", |c| read(c, domain, false))
    }
}

/// The domain row (`lock`: `FOR UPDATE`, so limits hold under concurrency)
/// with the count and quota sum of its mailboxes.
pub(super) fn read<Q: Queryable>(
    q: &mut Q,
    domain: &str,
    lock: bool,
) -> Result<Option<DomainRow>, StoreError> {
    let sql = if lock {
        "SELECT domain, active, mailboxes, defquota, maxquota, quota FROM domain WHERE domain = ? FOR UPDATE"
    } else {
        "SELECT domain, active, mailboxes, defquota, maxquota, quota FROM domain WHERE domain = ?"
    };
    let Some(mut r) = row::first(q, "domain", sql, (domain,))? else {
        return Ok(None);
    };
    let domain: String = r.next("domain")?;
    let active: i64 = r.next("active")?;
    let max_mailboxes: i64 = r.next("mailboxes")?;
    let defq: i64 = r.next("defquota")?;
    let maxq: i64 = r.next("maxquota")?;
    let quota: i64 = r.next("quota")?;
    let usage = row::first(
        q,
        "mailbox",
        "SELECT COUNT(*), SUM(quota) FROM mailbox WHERE domain = ? AND (kind = '' OR kind IS NULL)",
        (&domain,),
    )?;
    let (count, used) = match usage {
        // SUM() of a BIGINT column is a DECIMAL: read as text by the mysql crate.
        Some(mut u) => (
            u.next::<i64>("COUNT(*)")?,
            u.next::<Option<i64>>("SUM(quota)")?,
        ),
        None => (0, None),
    };
    Ok(Some(DomainRow {
        domain,
        active: active == 1,
        max_mailboxes,
        defquota_mib: defq.max(0) as u64,
        maxquota_mib: maxq.max(0) as u64,
        quota_mib: quota.max(0) as u64,
        mailbox_count: count,
        quota_used_bytes: used.unwrap_or(0).max(0) as u64,
    }))
}

/// The quota (bytes) a mailbox set from a template of `template_quota` bytes
/// gets, as mailcow's `mailbox_from_template` computes it
/// (functions.mailbox.inc.php: `intval($quota / 1048576)` MiB, on add and on
/// edit): whole MiB, rounded down; 0 is unlimited (the shipped Default
/// template has quota 0), never the domain's `defquota`.
pub fn mailbox_quota(template_quota: u64) -> u64 {
    template_quota / MIB * MIB
}

/// The quota (bytes) a new mailbox gets in the locked domain, or why it can't be created.
pub fn check_domain_room(
    domain: &str,
    template_quota: u64,
    d: Option<&DomainRow>,
) -> Result<u64, Failure> {
    let Some(d) = d else {
        return Err(Failure::Denied(format!(
            "domain {domain} does not exist in mailcow: add it first"
        )));
    };
    if !d.active {
        return Err(Failure::Denied(format!("domain {domain} is inactive")));
    }
    if d.mailbox_count >= d.max_mailboxes {
        return Err(Failure::Denied(format!(
            "domain {domain} has reached its \"Max. possible mailboxes\" ({})",
            d.max_mailboxes
        )));
    }
    let quota = mailbox_quota(template_quota);
    if quota > d.maxquota_mib.saturating_mul(MIB) {
        return Err(Failure::Denied(format!(
            "quota {} MiB is above domain {domain}'s per-mailbox maximum of {} MiB",
            quota / MIB,
            d.maxquota_mib
        )));
    }
    let left = d
        .quota_mib
        .saturating_mul(MIB)
        .saturating_sub(d.quota_used_bytes);
    if quota > left {
        return Err(Failure::Denied(format!(
            "quota {} MiB is more than the {} MiB left of domain {domain}'s \"Domain quota\"",
            quota / MIB,
            left / MIB
        )));
    }
    Ok(quota)
}
