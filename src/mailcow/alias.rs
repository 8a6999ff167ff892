//! `alias`: the mailbox's own alias (`address = goto = username`), and
//! whether an alias already holds a new mailbox's address.

use super::error::StoreError;
use super::row;
use mysql::prelude::Queryable;

/// The `goto` of the alias `address`, if there is one.
pub(super) fn target<Q: Queryable>(q: &mut Q, address: &str) -> Result<Option<String>, StoreError> {
    match row::first(
        q,
        "alias",
        "SELECT goto FROM alias WHERE address = ?",
        (address,),
    )? {
        Some(mut r) => Ok(Some(r.next("goto")?)),
        None => Ok(None),
    }
}

/// The mailbox's own alias, as mailbox('add', 'mailbox') writes it.
pub(super) fn insert_own<Q: Queryable>(
    q: &mut Q,
    username: &str,
    domain: &str,
    active: i64,
) -> Result<(), mysql::Error> {
    q.exec_drop(
        "INSERT INTO alias (address, goto, domain, active) VALUES (?, ?, ?, ?)",
        (username, username, domain, active),
    )
}

/// Switch the mailbox's own alias on or off (sync's deactivation and its undoing).
pub(super) fn set_own_active<Q: Queryable>(
    q: &mut Q,
    username: &str,
    active: bool,
) -> Result<(), mysql::Error> {
    q.exec_drop(
        "UPDATE alias SET active = ? WHERE address = ? AND goto = ?",
        (i64::from(active), username, username),
    )
}

/// Switch the directory aliases this tool made for `username` on or off,
/// with the mailbox (sync's deactivation and its undoing, in their transaction).
pub(super) fn set_ours_active<Q: Queryable>(
    q: &mut Q,
    username: &str,
    active: bool,
) -> Result<(), mysql::Error> {
    q.exec_drop(
        "UPDATE alias SET active = ? WHERE goto = ? AND address != goto AND private_comment = ?",
        (i64::from(active), username, DIRECTORY_ALIAS_MARK),
    )
}

// ---------------------------------------------------------------------------
// Aliases from the directory (`[mailcow] alias_attributes`).

/// The `private_comment` of an alias this tool created. Ownership lives in
/// the row itself: mailcow's UI shows the comment to admins (so they see
/// who keeps the alias), it goes with the row into backups and when an
/// admin deletes the alias, and it needs no table or column of ours
/// (mailcow's init_db.inc.php drops columns it does not know). An alias
/// without exactly this comment, or pointing elsewhere, is an admin's and
/// is never changed: editing the comment in the UI hands the alias over to
/// the admin.
pub const DIRECTORY_ALIAS_MARK: &str = "mailcow-ldap-auth: from the directory";

/// An alias row as the planning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRow {
    pub address: String,
    pub goto: String,
    pub private_comment: Option<String>,
    pub active: i64,
}

impl AliasRow {
    /// Created by this tool for `mailbox` (and not edited since).
    pub fn ours_for(&self, mailbox: &str) -> bool {
        self.private_comment.as_deref() == Some(DIRECTORY_ALIAS_MARK)
            && self.goto.eq_ignore_ascii_case(mailbox)
    }
}

/// One step of keeping a mailbox's directory aliases in step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasChange {
    Add {
        address: String,
        active: bool,
    },
    Remove {
        address: String,
    },
    SetActive {
        address: String,
        active: bool,
    },
    /// Someone else's alias holds the address: left as it is.
    Conflict {
        address: String,
        goto: String,
    },
    /// Neither a domain nor an alias domain of mailcow.
    UnknownDomain {
        address: String,
    },
    /// The domain's "Max. possible aliases" is reached.
    LimitReached {
        address: String,
        domain: String,
    },
}

impl AliasChange {
    /// Whether applying it writes something.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            AliasChange::Add { .. } | AliasChange::Remove { .. } | AliasChange::SetActive { .. }
        )
    }

    /// In words, for traces, the log and mailcow's Crontasks log.
    pub fn describe(&self, mailbox: &str) -> String {
        match self {
            AliasChange::Add { address, active } => format!(
                "alias {address} -> {mailbox} added{}",
                if *active { "" } else { " (inactive)" }
            ),
            AliasChange::Remove { address } => {
                format!("alias {address} -> {mailbox} removed (no longer in the directory)")
            }
            AliasChange::SetActive { address, active } => format!(
                "alias {address} -> {mailbox} {}",
                if *active { "activated" } else { "deactivated" }
            ),
            AliasChange::Conflict { address, goto } => format!(
                "alias {address}: wanted by the directory for {mailbox}, but mailcow's alias {address} -> {goto} was not made by mailcow-ldap-auth: left as it is"
            ),
            AliasChange::UnknownDomain { address } => format!(
                "alias {address} for {mailbox} skipped: its domain is neither a domain nor an alias domain of mailcow"
            ),
            AliasChange::LimitReached { address, domain } => format!(
                "alias {address} for {mailbox} skipped: domain {domain} has reached its \"Max. possible aliases\""
            ),
        }
    }
}

/// The pure plan for `mailbox`'s directory aliases: `wanted` (normalised,
/// without the mailbox's own address), `rows` (every alias row whose
/// address is wanted, and every row this tool made for the mailbox),
/// `domain_known` (mailcow's rule in mailbox('add', 'alias'),
/// functions.mailbox.inc.php: the domain, or an alias domain's target,
/// exists), `aliases_left` (per domain: mailcow's `aliases_left` of
/// `mailbox('get', 'domain_details')`, `None` for an alias domain, which
/// mailcow does not count). A mailbox that receives no mail (active 0)
/// keeps its aliases, inactive.
pub fn plan(
    mailbox: &str,
    wanted: &[String],
    mailbox_active: i64,
    rows: &[AliasRow],
    domain_known: &dyn Fn(&str) -> bool,
    aliases_left: &dyn Fn(&str) -> Option<i64>,
) -> Vec<AliasChange> {
    let active = mailbox_active != 0;
    let mut out = Vec::new();
    let mut added: std::collections::HashMap<String, i64> = Default::default();
    for address in wanted {
        let row = rows
            .iter()
            .find(|r| r.address.eq_ignore_ascii_case(address));
        match row {
            Some(r) if r.ours_for(mailbox) => {
                if (r.active != 0) != active {
                    out.push(AliasChange::SetActive {
                        address: address.clone(),
                        active,
                    });
                }
            }
            Some(r) => out.push(AliasChange::Conflict {
                address: address.clone(),
                goto: r.goto.clone(),
            }),
            None => {
                let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                if !domain_known(domain) {
                    out.push(AliasChange::UnknownDomain {
                        address: address.clone(),
                    });
                    continue;
                }
                if let Some(left) = aliases_left(domain) {
                    let used = added.entry(domain.to_owned()).or_insert(0);
                    if left - *used <= 0 {
                        out.push(AliasChange::LimitReached {
                            address: address.clone(),
                            domain: domain.to_owned(),
                        });
                        continue;
                    }
                    *used += 1;
                }
                out.push(AliasChange::Add {
                    address: address.clone(),
                    active,
                });
            }
        }
    }
    for r in rows.iter().filter(|r| r.ours_for(mailbox)) {
        if !wanted.iter().any(|w| w.eq_ignore_ascii_case(&r.address)) {
            out.push(AliasChange::Remove {
                address: r.address.clone(),
            });
        }
    }
    out
}

/// The rows [`plan`] needs, locked (`FOR UPDATE`) inside the caller's transaction.
pub(super) fn rows_for<Q: Queryable>(
    q: &mut Q,
    mailbox: &str,
    wanted: &[String],
) -> Result<Vec<AliasRow>, StoreError> {
    let mut sql = String::from(
        "SELECT address, goto, private_comment, active FROM alias \
         WHERE address != goto AND ((goto = ? AND private_comment = ?)",
    );
    let mut params: Vec<String> = vec![mailbox.to_owned(), DIRECTORY_ALIAS_MARK.to_owned()];
    if !wanted.is_empty() {
        sql.push_str(&format!(
            " OR address IN ({})",
            vec!["?"; wanted.len()].join(",")
        ));
        params.extend(wanted.iter().cloned());
    }
    sql.push_str(") FOR UPDATE");
    let mut out = Vec::new();
    for mut r in row::all(q, "alias", &sql, params)? {
        out.push(AliasRow {
            address: r.next("address")?,
            goto: r.next("goto")?,
            private_comment: r.next("private_comment")?,
            active: r.next("active")?,
        });
    }
    // A wanted address that is a mailbox's own alias row (address = goto).
    if !wanted.is_empty() {
        let sql = format!(
            "SELECT address, goto FROM alias WHERE address = goto AND address IN ({})",
            vec!["?"; wanted.len()].join(",")
        );
        for mut r in row::all(q, "alias", &sql, wanted.to_vec())? {
            out.push(AliasRow {
                address: r.next("address")?,
                goto: r.next("goto")?,
                private_comment: None,
                active: 1,
            });
        }
    }
    Ok(out)
}

/// Which of `domains` are mailcow domains or alias domains (the rule of
/// mailbox('add', 'alias')), and for each real domain its `aliases_left`
/// (functions.mailbox.inc.php, `domain_details`: `domain.aliases` less the
/// aliases of the domain and its alias domains that are not a mailbox).
pub(super) fn domains<Q: Queryable>(
    q: &mut Q,
    domains: &[String],
) -> Result<Vec<(String, Option<i64>)>, StoreError> {
    let mut out = Vec::new();
    for d in domains {
        if let Some(mut r) = row::first(
            q,
            "domain",
            "SELECT d.aliases - (SELECT COUNT(address) FROM alias \
               WHERE (domain = d.domain OR domain IN (SELECT alias_domain FROM alias_domain WHERE target_domain = d.domain)) \
               AND address NOT IN (SELECT username FROM mailbox)) FROM domain d WHERE d.domain = ?",
            (d,),
        )? {
            let left: i64 = r.next("aliases")?;
            out.push((d.to_lowercase(), Some(left)));
        } else if row::first(
            q,
            "alias_domain",
            "SELECT ad.target_domain FROM alias_domain ad JOIN domain d ON d.domain = ad.target_domain \
             WHERE ad.alias_domain = ?",
            (d,),
        )?
        .is_some()
        {
            out.push((d.to_lowercase(), None));
        }
    }
    Ok(out)
}

/// Write one planned change, as mailbox('add'|'edit'|'delete', 'alias')
/// (functions.mailbox.inc.php) writes it: an added alias has the UI form's
/// defaults (`sogo_visible` 1, `internal` 0, `sender_allowed` 1, empty
/// public comment), `domain` the address's own domain, `created` and
/// `modified` from the table's defaults; a removal also removes the
/// `sender_acl` rows that send as it (as mailbox('delete', 'alias') does).
pub(super) fn apply<Q: Queryable>(
    q: &mut Q,
    mailbox: &str,
    change: &AliasChange,
) -> Result<(), StoreError> {
    match change {
        AliasChange::Add { address, active } => {
            let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            q.exec_drop(
                "INSERT INTO alias (address, public_comment, private_comment, goto, domain, sogo_visible, internal, sender_allowed, active) \
                 VALUES (?, '', ?, ?, ?, 1, 0, 1, ?)",
                (address, DIRECTORY_ALIAS_MARK, mailbox, domain, i64::from(*active)),
            )?;
        }
        AliasChange::Remove { address } => {
            q.exec_drop(
                "DELETE FROM alias WHERE address = ? AND goto = ? AND private_comment = ?",
                (address, mailbox, DIRECTORY_ALIAS_MARK),
            )?;
            q.exec_drop("DELETE FROM sender_acl WHERE send_as = ?", (address,))?;
        }
        AliasChange::SetActive { address, active } => {
            q.exec_drop(
                "UPDATE alias SET active = ? WHERE address = ? AND goto = ? AND private_comment = ?",
                (i64::from(*active), address, mailbox, DIRECTORY_ALIAS_MARK),
            )?;
        }
        AliasChange::Conflict { .. }
        | AliasChange::UnknownDomain { .. }
        | AliasChange::LimitReached { .. } => {}
    }
    Ok(())
}

impl super::Store {
    /// Keep `mailbox`'s directory aliases in step with `wanted` in one
    /// transaction (the mailbox row locked, its SOGo row refreshed as
    /// mailcow's `update_sogo_static_view($mailbox)` after an alias change):
    /// returns the plan, applied unless `dry_run` (then nothing is locked or
    /// written). Nothing for a mailbox that is not `ldap`.
    pub fn keep_directory_aliases(
        &mut self,
        mailbox: &str,
        wanted: &[String],
        dry_run: bool,
    ) -> Result<Vec<AliasChange>, crate::outcome::Failure> {
        if dry_run {
            return self.on_conn("reading aliases", |c| plan_in(c, mailbox, wanted, false));
        }
        self.transaction(
            "writing the mailbox's aliases",
            mysql::TxOpts::default(),
            3,
            |tx| {
                let changes = plan_in(tx, mailbox, wanted, true)?;
                for c in &changes {
                    apply(tx, mailbox, c)?;
                }
                if changes.iter().any(AliasChange::writes) {
                    super::sogo::refresh(tx, &[mailbox])
                        .map_err(|e| e.context("writing SOGo's rows (_sogo_static_view)"))?;
                }
                Ok(changes)
            },
        )
    }
}

fn plan_in<Q: Queryable>(
    q: &mut Q,
    mailbox: &str,
    wanted: &[String],
    lock: bool,
) -> Result<Vec<AliasChange>, StoreError> {
    let sql = if lock {
        "SELECT active FROM mailbox WHERE username = ? AND authsource = 'ldap' FOR UPDATE"
    } else {
        "SELECT active FROM mailbox WHERE username = ? AND authsource = 'ldap'"
    };
    let Some(mut r) = row::first(q, "mailbox", sql, (mailbox,))? else {
        return Ok(Vec::new());
    };
    let active: i64 = r.next("active")?;
    let rows = rows_for(q, mailbox, wanted)?;
    let mut wanted_domains: Vec<String> = wanted
        .iter()
        .filter_map(|a| a.rsplit_once('@').map(|(_, d)| d.to_owned()))
        .collect();
    wanted_domains.sort();
    wanted_domains.dedup();
    let known = domains(q, &wanted_domains)?;
    Ok(plan(
        mailbox,
        wanted,
        active,
        &rows,
        &|d| known.iter().any(|(k, _)| k == d),
        &|d| known.iter().find(|(k, _)| k == d).and_then(|(_, l)| *l),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "jdoe@example.org";

    fn row(address: &str, goto: &str, ours: bool, active: i64) -> AliasRow {
        AliasRow {
            address: address.into(),
            goto: goto.into(),
            private_comment: ours.then(|| DIRECTORY_ALIAS_MARK.to_owned()),
            active,
        }
    }

    fn run(wanted: &[&str], active: i64, rows: &[AliasRow]) -> Vec<AliasChange> {
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        plan(
            ME,
            &wanted,
            active,
            rows,
            &|d| d == "example.org" || d == "alias.example",
            &|d| (d == "example.org").then_some(1),
        )
    }

    #[test]
    fn aliases_are_added_removed_and_follow_the_mailbox() {
        let add = |a: &str, active| AliasChange::Add {
            address: a.into(),
            active,
        };
        assert_eq!(
            run(
                &["a@example.org", "b@alias.example", "c@elsewhere.example"],
                1,
                &[]
            ),
            [
                add("a@example.org", true),
                add("b@alias.example", true),
                AliasChange::UnknownDomain {
                    address: "c@elsewhere.example".into()
                },
            ]
        );
        // The domain's last free alias goes to the first; the alias domain is not counted.
        assert_eq!(
            run(&["a@example.org", "b@example.org"], 1, &[])[1],
            AliasChange::LimitReached {
                address: "b@example.org".into(),
                domain: "example.org".into()
            }
        );
        // Already there and ours: nothing; gone from the directory: removed.
        let ours = [
            row("a@example.org", ME, true, 1),
            row("old@example.org", ME, true, 1),
        ];
        assert_eq!(
            run(&["a@example.org"], 1, &ours),
            [AliasChange::Remove {
                address: "old@example.org".into()
            }]
        );
        // A deactivated mailbox deactivates them, reactivation re-activates them.
        assert_eq!(
            run(&["a@example.org"], 0, &ours[..1]),
            [AliasChange::SetActive {
                address: "a@example.org".into(),
                active: false
            }]
        );
        assert_eq!(
            run(&["a@example.org"], 2, &[row("a@example.org", ME, true, 0)]),
            [AliasChange::SetActive {
                address: "a@example.org".into(),
                active: true
            }]
        );
    }

    #[test]
    fn an_alias_someone_else_made_is_never_touched() {
        // Made by hand for this mailbox, or ours once but pointed elsewhere since.
        for foreign in [
            row("a@example.org", ME, false, 1),
            row("a@example.org", "boss@example.org", true, 1),
            row("a@example.org", "a@example.org", false, 1),
        ] {
            let goto = foreign.goto.clone();
            assert_eq!(
                run(&["a@example.org"], 1, std::slice::from_ref(&foreign)),
                [AliasChange::Conflict {
                    address: "a@example.org".into(),
                    goto
                }]
            );
            // Not wanted any more: still not ours to remove.
            assert_eq!(run(&[], 1, &[foreign]), []);
        }
        let text = AliasChange::Conflict {
            address: "a@example.org".into(),
            goto: "boss@example.org".into(),
        }
        .describe(ME);
        assert!(
            text.contains(ME) && text.contains("boss@example.org"),
            "{text}"
        );
    }
}
