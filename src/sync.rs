//! `sync`: import directory users as mailboxes and keep `ldap` mailboxes in
//! step with their templates ("Import Users", "Periodic Full Sync"), plus the
//! safe deprovisioning of users who left the directory.
//!
//! The directory is read page by page (RFC 2696), twice: a first pass reads
//! only each entry's address, to find those several entries share
//! ([`find_conflicts`]: left alone by the run); then each page is planned by
//! the pure [`plan_page`] and applied before the next is fetched, so memory is
//! bounded by the page size and the addresses (with one DN each) of the
//! search. Departures are planned by the pure [`plan_missing`] only after a
//! complete search.

use crate::auth::choose_template;
use crate::config::{Config, FilterTemplate, Retire};
use crate::cronlog::CronLog;
use crate::directory::{rc, Directory, Silent, UserEntry};
use crate::health::unix_now;
use crate::mailcow::{self, Created, LdapMailbox, MailboxRow, Presence, Store, Template};
use crate::outcome::Failure;
use crate::provision::{self, MailboxUpdate, NewMailbox};
use ldap3::adapters::{Adapter, PagedResults};
use ldap3::{LdapConn, Scope, SearchEntry};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const STATE_FILE: &str = "sync-state.json";
/// Mailboxes created in one transaction (with the domain row locked): a
/// first login in that domain waits for one batch at most, a few ms.
const CREATE_BATCH: usize = 20;
const LOCK_FILE: &str = "sync.lock";

/// A directory entry reduced to what the plan needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirUser {
    pub dn: String,
    /// The mailbox address, or why there is none.
    pub address: Result<String, String>,
    pub name: String,
    /// The template a mapping selects (`None`: the default template, if any, applies).
    pub mapped_template: Option<String>,
    /// The template a new mailbox gets (mapping, else default).
    pub template: Option<String>,
    /// A retiring value (`action =` on the first matching mapping) and the value.
    pub retire: Option<(Retire, String)>,
    /// The addresses `[mailcow] alias_attributes` name, and the values
    /// skipped as not addresses ([`provision::directory_aliases`]).
    pub aliases: (Vec<String>, Vec<String>),
}

/// The mailbox address of an entry as logins compute it (from
/// `username_field` and `provisioning.mail_field` only), or why there is none.
pub fn entry_address(cfg: &Config, entry: &UserEntry) -> Result<String, String> {
    let login = entry.first(&cfg.ldap.username_field).unwrap_or_default();
    provision::canonical_address(cfg, entry, login).map_err(|f| f.to_string())
}

/// The attributes [`entry_address`] reads.
fn address_attributes(cfg: &Config) -> Vec<String> {
    let mut a = vec![cfg.ldap.username_field.clone()];
    a.extend(cfg.provisioning.mail_field.clone());
    a.sort();
    a.dedup();
    a
}

/// Addresses that more than one directory entry has (address -> their DNs,
/// in the order met). Such an address is left alone by a run: neither entry
/// may create or update its mailbox (whichever came last would win, and a
/// row would flip between runs), and a login of it is refused as ambiguous.
pub type Conflicts = HashMap<String, Vec<String>>;

/// The [`Conflicts`] among `(dn, address)` pairs of a whole search (the
/// addresses already normalised, so case never hides a twin). Pure.
pub fn find_conflicts<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Conflicts {
    let mut first: HashMap<&str, &str> = HashMap::new();
    let mut conflicts = Conflicts::new();
    for (dn, address) in entries {
        match first.get(address) {
            None => {
                first.insert(address, dn);
            }
            Some(&dn0) => conflicts
                .entry(address.to_owned())
                .or_insert_with(|| vec![dn0.to_owned()])
                .push(dn.to_owned()),
        }
    }
    conflicts
}

/// Reduce an entry: address as logins compute it, display name, template choice.
pub fn dir_user(cfg: &Config, entry: &UserEntry) -> DirUser {
    let login = entry
        .first(&cfg.ldap.username_field)
        .unwrap_or_default()
        .to_owned();
    let address = entry_address(cfg, entry);
    let name = provision::display_name(entry, address.as_deref().unwrap_or(&login));
    let choice = choose_template(cfg, entry);
    DirUser {
        dn: entry.dn.clone(),
        name,
        mapped_template: choice.and_then(|(t, v)| v.map(|_| t.to_owned())),
        template: choice.map(|(t, _)| t.to_owned()),
        retire: crate::auth::retiring(cfg, entry).map(|(a, v)| (a, v.to_owned())),
        aliases: match &address {
            Ok(a) if !cfg.alias_attributes.is_empty() => {
                provision::directory_aliases(&cfg.alias_attributes, entry, a)
            }
            _ => Default::default(),
        },
        address,
    }
}

/// One change the sync makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create(NewMailbox),
    Update(MailboxUpdate),
    /// The entry is back: undo a deactivation done by sync (or just clear the marker).
    Reactivate {
        username: String,
        was_deactivated: bool,
    },
    Skip {
        who: String,
        reason: String,
    },
    /// More than one directory entry has this address: nothing is changed
    /// for it, and the run reports it as an error.
    Conflict {
        address: String,
        dns: Vec<String>,
        /// The attribute the address comes from (`mail_field`, else `username_field`).
        attribute: String,
    },
    MarkMissing {
        username: String,
        since: u64,
    },
    /// A retiring directory value: set `active` as the action says.
    Retire {
        username: String,
        action: Retire,
        value: String,
    },
    /// The retiring value is gone: active 1 again (only what it set).
    Unretire {
        username: String,
    },
    Deactivate {
        username: String,
        /// Deactivate only if the mailbox's "missing since" mark is still there
        /// and this old or older (checked in the same statement).
        marked_before: u64,
    },
}

impl Change {
    pub fn describe(&self) -> String {
        match self {
            Change::Create(n) => describe_create(n),
            Change::Update(u) => format!(
                "update {} ({})",
                u.username,
                if u.acl.is_some() {
                    "template changed"
                } else {
                    "display name changed"
                }
            ),
            Change::Reactivate {
                username,
                was_deactivated: true,
            } => {
                format!("reactivate {username} (back in the directory)")
            }
            Change::Reactivate {
                username,
                was_deactivated: false,
            } => {
                format!("clear missing mark of {username} (back in the directory)")
            }
            Change::Skip { who, reason } => format!("skip {who}: {reason}"),
            Change::Conflict {
                address,
                dns,
                attribute,
            } => format!(
                "address conflict: {} directory entries have the address {address} ({}): nothing is created or updated for it, and a login of it is refused as ambiguous; give each entry its own address ({}), or narrow ldap.filter so that one of them matches",
                dns.len(),
                dns.join("; "),
                attribute,
            ),
            Change::MarkMissing { username, .. } => {
                format!("mark {username} missing (no longer in the directory or the filter)")
            }
            Change::Deactivate { username, .. } => {
                format!("deactivate {username} (missing beyond the grace period)")
            }
            Change::Retire {
                username,
                action,
                value,
            } => format!(
                "set {username} to active {} (directory value \"{value}\": action {})",
                action.active(),
                action.name()
            ),
            Change::Unretire { username } => format!(
                "reactivate {username} (the directory value that retired it is gone)"
            ),
        }
    }
}

fn describe_create(n: &NewMailbox) -> String {
    format!(
        "create {} (name \"{}\", template \"{}\")",
        n.username, n.name, n.template
    )
}

/// Plan one page: `users` from the directory, `rows` the mailboxes that exist
/// for their addresses (by lower-cased address), `seen` the addresses already
/// met in this run (updated here), `conflicts` the addresses several entries
/// of the whole search share ([`find_conflicts`], the run's first pass).
/// Pure: no I/O.
pub fn plan_page(
    cfg: &Config,
    users: &[DirUser],
    rows: &HashMap<String, MailboxRow>,
    templates: &HashMap<String, Template>,
    seen: &mut HashSet<String>,
    conflicts: &Conflicts,
    now: &str,
) -> Vec<Change> {
    let mut changes = Vec::new();
    // An address two entries share, in the whole search or (the directory
    // having changed since the first pass) in this page, is left alone for
    // both, as a login of it is refused as ambiguous: no mailbox nobody
    // could log in to, and no row that flips between the two entries.
    let here = find_conflicts(
        users
            .iter()
            .filter_map(|u| u.address.as_deref().ok().map(|a| (u.dn.as_str(), a))),
    );
    let attribute = cfg
        .provisioning
        .mail_field
        .as_deref()
        .unwrap_or(&cfg.ldap.username_field);
    for u in users {
        let address = match &u.address {
            Ok(a) => a.clone(),
            Err(reason) => {
                changes.push(Change::Skip {
                    who: u.dn.clone(),
                    reason: reason.clone(),
                });
                continue;
            }
        };
        if let Some(dns) = conflicts.get(&address).or_else(|| here.get(&address)) {
            // Seen: its mailbox is not "missing" either.
            if seen.insert(address.clone()) {
                changes.push(Change::Conflict {
                    address,
                    dns: dns.clone(),
                    attribute: attribute.to_owned(),
                });
            }
            continue;
        }
        if !seen.insert(address.clone()) {
            changes.push(Change::Skip {
                who: address,
                reason: format!("another directory entry has the same address ({})", u.dn),
            });
            continue;
        }
        match rows.get(&address) {
            None => {
                if !cfg.sync.import_users {
                    continue;
                }
                if let Some((action, value)) = &u.retire {
                    changes.push(Change::Skip {
                        who: address,
                        reason: format!(
                            "the directory value \"{value}\" retires it (action {}): no mailbox is created",
                            action.name()
                        ),
                    });
                    continue;
                }
                match u.template.as_ref().map(|t| (t, templates.get(t))) {
                    None => changes.push(Change::Skip {
                        who: address,
                        reason: "no attribute mapping matched and no default_template is set"
                            .into(),
                    }),
                    Some((t, None)) => changes.push(Change::Skip {
                        who: address,
                        reason: format!("mailbox template \"{t}\" does not exist in mailcow"),
                    }),
                    Some((_, Some(t))) => changes.push(Change::Create(provision::new_mailbox(
                        &address, &u.name, t, now,
                    ))),
                }
            }
            // mailcow's own mailboxes are never touched.
            Some(row) if !row.is_ldap() => {}
            Some(row) => {
                if row.attr(mailcow::DEACTIVATED_BY_SYNC).as_deref() == Some("1") {
                    changes.push(Change::Reactivate {
                        username: row.username.clone(),
                        was_deactivated: true,
                    });
                } else if row.attributes.contains_key(mailcow::MISSING_SINCE) {
                    changes.push(Change::Reactivate {
                        username: row.username.clone(),
                        was_deactivated: false,
                    });
                }
                let retired = row.attr(mailcow::RETIRED_BY_VALUE);
                match &u.retire {
                    // Only where the tool owns `active` (1, or what it set);
                    // the store checks the same again in its statement.
                    Some((action, value))
                        if retired.as_deref() != Some(action.active().to_string().as_str())
                            && (row.active == 1
                                || retired.as_deref() == Some(row.active.to_string().as_str())
                                || row.attr(mailcow::DEACTIVATED_BY_SYNC).as_deref()
                                    == Some("1")) =>
                    {
                        changes.push(Change::Retire {
                            username: row.username.clone(),
                            action: *action,
                            value: value.clone(),
                        })
                    }
                    None if retired.is_some() => changes.push(Change::Unretire {
                        username: row.username.clone(),
                    }),
                    _ => {}
                }
                if cfg.sync.periodic_full_sync {
                    let template = u.mapped_template.as_ref().and_then(|t| templates.get(t));
                    if let Some(upd) = provision::plan_update(row, &u.name, template, now) {
                        changes.push(Change::Update(upd));
                    }
                }
            }
        }
    }
    changes
}

/// Why departures were not acted on in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Incomplete(String),
    OverCap {
        missing: usize,
        total: usize,
        percent: u32,
    },
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Incomplete(why) => write!(f, "the directory search did not complete ({why}): nothing is marked or deactivated"),
            Hold::OverCap { missing, total, percent } => write!(
                f,
                "{missing} of {total} LDAP mailboxes are missing from the directory, more than sync.max_deactivate_percent = {percent}%: \
                 nothing is marked or deactivated (check the filter and base_dn; raise the limit if this is intended)"
            ),
        }
    }
}

/// Plan departures: `ldap` mailboxes whose address was not `seen` in a
/// complete search are marked missing, then deactivated once missing for the
/// grace period. Pure: no I/O.
pub fn plan_missing(
    cfg: &Config,
    mailboxes: &[LdapMailbox],
    seen: &HashSet<String>,
    incomplete: Option<String>,
    now: u64,
) -> Result<Vec<Change>, Hold> {
    if !cfg.sync.deactivate_missing {
        return Ok(Vec::new());
    }
    if let Some(why) = incomplete {
        return Err(Hold::Incomplete(why));
    }
    let missing: Vec<&LdapMailbox> = mailboxes
        .iter()
        .filter(|m| !seen.contains(&m.username.to_lowercase()))
        // Already deactivated by sync: nothing more to do. Disabled by an admin: not ours to touch.
        .filter(|m| !m.deactivated_by_sync && m.active != 0)
        .collect();
    let total = mailboxes.len();
    let percent = cfg.sync.max_deactivate_percent;
    if !missing.is_empty() && missing.len() * 100 > total * percent as usize {
        return Err(Hold::OverCap {
            missing: missing.len(),
            total,
            percent,
        });
    }
    let grace = cfg.sync.missing_grace.as_secs();
    Ok(missing
        .into_iter()
        .map(|m| match m.missing_since {
            None => Change::MarkMissing {
                username: m.username.clone(),
                since: now,
            },
            Some(since) if now.saturating_sub(since) >= grace => Change::Deactivate {
                username: m.username.clone(),
                marked_before: now.saturating_sub(grace),
            },
            Some(_) => Change::Skip {
                who: m.username.clone(),
                reason: "missing from the directory, within the grace period".into(),
            },
        })
        .collect())
}

/// What to say when the server's size limit cut a search short: the limit,
/// who it applies to, and the server setting that lifts it.
pub fn size_limit_advice(bind_dn: Option<&str>, entries: usize) -> String {
    let (who, limits) = match bind_dn {
        Some(dn) => (
            format!("the bind DN {dn}"),
            format!("limits dn.exact=\"{dn}\" size.prtotal=unlimited"),
        ),
        None => (
            "anonymous searches".to_owned(),
            "limits anonymous size.prtotal=unlimited".to_owned(),
        ),
    };
    format!(
        "the directory's size limit for {who} stopped the search after {entries} entries \
         (result code 4, sizeLimitExceeded; OpenLDAP's default is sizelimit 500): raise it for this DN, \
         on OpenLDAP with `{limits}` (or size=unlimited) in the database's section of slapd.conf \
         (olcLimits in cn=config), on Active Directory with MaxPageSize / MaxResultSetSize in its LDAP policy"
    )
}

/// The search filter of a sync: every user the login filter could let in
/// and give a mailbox. With a `default_template` an entry without
/// `attribute_field` gets one at login, so the sync imports it too, unless
/// `sync.import_requires_attribute` asks for mailcow's rule (its
/// crons/ldap-sync.php always searches `(attribute_field=*)`).
pub fn sync_filter(cfg: &Config) -> String {
    let uf = &cfg.ldap.username_field;
    let mut parts = String::new();
    match &cfg.ldap.filter {
        FilterTemplate::And { extra: Some(f) } => parts.push_str(f),
        FilterTemplate::And { extra: None } => {}
        FilterTemplate::Placeholder(f) => parts.push_str(&f.replace("%u", "*").replace("%s", "*")),
    }
    parts.push_str(&format!("({uf}=*)"));
    if let Some(af) = &cfg.ldap.attribute_field {
        if cfg.provisioning.default_template.is_none() || cfg.sync.import_requires_attribute {
            parts.push_str(&format!("({af}=*)"));
        }
    }
    format!("(&{parts})")
}

/// Counts for the summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub entries: usize,
    pub created: usize,
    pub updated: usize,
    pub reactivated: usize,
    /// "Missing since" marks removed (the user is back before the grace ran out).
    pub cleared: usize,
    pub marked: usize,
    pub deactivated: usize,
    /// Set to active 2 or 0 by a retiring directory value, and back to 1.
    pub retired: usize,
    pub unretired: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Addresses several directory entries share (left alone).
    pub conflicts: usize,
}

/// What the sync remembers between runs, in `state_dir`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncState {
    /// When the last complete run started.
    pub last_completed: Option<u64>,
    /// When the last run (complete or not) started.
    pub last_attempt: Option<u64>,
    /// Runs started since the last complete one (a run that is still going,
    /// or was killed, counts as failed).
    pub failures: u32,
}

impl SyncState {
    fn load(state_dir: &Path) -> SyncState {
        let Some(v) = crate::state_dir::read_small(state_dir, STATE_FILE, 64 * 1024)
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        else {
            return SyncState::default();
        };
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        SyncState {
            last_completed: n("last_completed"),
            last_attempt: n("last_attempt"),
            failures: n("failures").unwrap_or(0).min(u64::from(u32::MAX)) as u32,
        }
    }

    fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::json!({
            "last_completed": self.last_completed,
            "last_attempt": self.last_attempt,
            "failures": self.failures,
        })
        .to_string();
        crate::state_dir::write_atomic(state_dir, STATE_FILE, text.as_bytes())
    }
}

/// The wait after `failures` failed runs in a row: 2, 4, 8, ... minutes,
/// never more than the interval. Pure.
pub fn backoff(failures: u32, interval: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let minutes = 1u64 << failures.min(20);
    Duration::from_secs(minutes * 60).min(interval)
}

/// Why a run does not start now, if it doesn't. Pure.
pub fn not_now(state: &SyncState, now: u64, interval: Duration) -> Option<String> {
    if let Some(last) = state.last_completed {
        let age = now.saturating_sub(last);
        if age < interval.as_secs() && state.failures == 0 {
            return Some(format!(
                "not due yet: last run completed {} min ago, interval {} min (--force runs now)",
                age / 60,
                interval.as_secs() / 60
            ));
        }
    }
    let wait = backoff(state.failures, interval).as_secs();
    let since = now.saturating_sub(state.last_attempt?);
    (state.failures > 0 && since < wait).then(|| {
        format!(
            "backing off after {} failed run(s): last attempt {since} s ago, next one in {} s (--force runs now)",
            state.failures,
            wait - since
        )
    })
}

/// How a run ended when nothing failed.
#[derive(Debug)]
enum Ran {
    Done,
    /// Another host's sync holds the database lock (named): nothing was done.
    OtherHost(String),
}

/// Set by `sync --every` on SIGTERM/SIGINT: a run in progress stops before its
/// next page (see `schedule`).
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Options of the `sync` command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    pub force: bool,
}

/// The `sync` command.
/// One sync at a time: while mailcow's own LDAP sync is switched on in its UI,
/// both would import and update the same mailboxes, so ours refuses (exit 1),
/// naming the switches, unless `sync.alongside_mailcow_sync` says otherwise. A
/// dry run writes nothing and only warns.
fn refuse_beside_mailcow_sync(
    cfg: &Config,
    opts: Options,
    out: &mut CronLog,
) -> Result<(), ExitCode> {
    let Some(db) = cfg.database.as_ref() else {
        return Ok(());
    };
    if cfg.sync.alongside_mailcow_sync {
        return Ok(());
    }
    let deadline = Instant::now() + cfg.login_timeout;
    let rows = crate::mailcow::read_identity_provider(db, deadline).map_err(|f| {
        out.error(&format!(
            "cannot read mailcow's Identity Provider settings: {f}"
        ));
        ExitCode::from(111)
    })?;
    if !crate::mailcow::mailcow_sync_on(&rows) {
        return Ok(());
    }
    let why = "mailcow's own LDAP sync is switched on (System > Configuration > Access > \
               Identity Provider: \"Import Users\" or \"Periodic Full Sync\"); untick both there \
               and save, or set sync.alongside_mailcow_sync = true to run both";
    if opts.dry_run {
        out.warn(&format!("{why} (dry run: going on)"));
        return Ok(());
    }
    out.error(&format!("refused: {why}"));
    Err(ExitCode::from(1))
}

pub fn run(cfg: &Config, opts: Options) -> ExitCode {
    let mut out = CronLog::new(cfg.redis_url.as_ref());
    // Each line goes to the system log; printed too for a person at the
    // terminal, but not when stdout is the journal (systemd): once is enough.
    out.echo = !crate::log::stdout_is_journal();
    if !cfg.sync.import_users && !cfg.sync.periodic_full_sync {
        println!(
            "sync: nothing to do: neither sync.import_users nor sync.periodic_full_sync is on"
        );
        return ExitCode::SUCCESS;
    }
    if let Err(code) = refuse_beside_mailcow_sync(cfg, opts, &mut out) {
        return code;
    }
    if let Err(e) = std::fs::create_dir_all(&cfg.state_dir) {
        out.error(&format!(
            "state_dir {} cannot be created: {e}",
            cfg.state_dir.display()
        ));
        return ExitCode::from(111);
    }
    if let Err(e) = crate::state_dir::check_for_root(&cfg.state_dir) {
        out.error(&e);
        return ExitCode::from(111);
    }
    // One run at a time, across processes: an exclusive lock held until exit.
    // Opened without following a link or waiting on a FIFO (a planted
    // `sync.lock` link made root create its target). Read-only is enough for
    // flock, so a lock file someone else created (root running a sync by
    // hand, say) does not lock the timer's user out.
    let lock =
        match crate::state_dir::open_regular(&cfg.state_dir, LOCK_FILE, false).or_else(|e| match e
            .kind()
        {
            std::io::ErrorKind::NotFound => {
                crate::state_dir::open_regular(&cfg.state_dir, LOCK_FILE, true)
            }
            _ => Err(e),
        }) {
            Ok(f) => f,
            Err(e) => {
                out.error(&format!(
                    "cannot open the lock file in {}: {e}",
                    cfg.state_dir.display()
                ));
                return ExitCode::from(111);
            }
        };
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            println!(
                "sync: already running (lock {} held)",
                cfg.state_dir.join(LOCK_FILE).display()
            );
            return ExitCode::SUCCESS;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            out.error(&format!(
                "cannot lock {}: {e}",
                cfg.state_dir.join(LOCK_FILE).display()
            ));
            return ExitCode::from(111);
        }
    }
    let now = unix_now();
    let mut state = SyncState::load(&cfg.state_dir);
    if !opts.force {
        if let Some(why) = not_now(&state, now, cfg.sync.interval) {
            // Not logged to CRON_LOG: a timer runs this every minute.
            println!("sync: {why}");
            return ExitCode::SUCCESS;
        }
    }
    if !opts.dry_run {
        // The attempt is recorded before it starts: one that is killed counts as failed.
        state.last_attempt = Some(now);
        state.failures = state.failures.saturating_add(1);
        if let Err(e) = state.save(&cfg.state_dir) {
            out.warn(&format!(
                "cannot record the attempt in {}: {e}",
                cfg.state_dir.display()
            ));
        }
    }
    let started = Instant::now();
    let mut counts = Counts::default();
    let result = sync_once(cfg, opts, &mut out, &mut counts, now);
    let took = started.elapsed().as_secs_f64();
    let summary = format!(
        "{}{} directory entries; created {}, updated {}, reactivated {}, marked missing {}, deactivated {}, skipped {}, failed {}, missing marks cleared {}{}{}; {took:.1} s",
        if opts.dry_run { "DRY RUN, nothing written: " } else { "" },
        counts.entries,
        counts.created,
        counts.updated,
        counts.reactivated,
        counts.marked,
        counts.deactivated,
        counts.skipped,
        counts.failed,
        counts.cleared,
        match (counts.retired, counts.unretired) {
            (0, 0) => String::new(),
            (r, u) => format!(", retired by a directory value {r}, reactivated from that {u}"),
        },
        match counts.conflicts {
            0 => String::new(),
            n => format!(", address conflicts {n} (each named above: nothing changed for them)"),
        }
    );
    match result {
        Ok(Ran::OtherHost(lock)) => {
            // Not logged to CRON_LOG: the timers of several hosts meet here often.
            println!("sync: already running on another host (database lock \"{lock}\" held)");
            ExitCode::SUCCESS
        }
        Ok(Ran::Done) => {
            out.info(&format!("done: {summary}"));
            if !opts.dry_run {
                state.last_completed = Some(now);
                state.failures = 0;
                if let Err(e) = state.save(&cfg.state_dir) {
                    out.warn(&format!(
                        "cannot record the completion time in {}: {e}",
                        cfg.state_dir.display()
                    ));
                }
            }
            ExitCode::SUCCESS
        }
        Err(f) if STOP.load(std::sync::atomic::Ordering::SeqCst) && !opts.dry_run => {
            // Stopped on purpose (`sync --every` on SIGTERM), not failed: the
            // next start owes no back-off. Not completed all the same.
            state.failures = state.failures.saturating_sub(1);
            if let Err(e) = state.save(&cfg.state_dir) {
                out.warn(&format!(
                    "cannot record the stop in {}: {e}",
                    cfg.state_dir.display()
                ));
            }
            out.warn(&format!("{f}; {summary}"));
            ExitCode::from(111)
        }
        Err(f) => {
            let next = if opts.dry_run {
                String::new()
            } else {
                format!(
                    "; the next run waits {} min (--force runs now)",
                    backoff(state.failures, cfg.sync.interval).as_secs() / 60
                )
            };
            out.error(&format!("stopped: {f}; {summary}{next}"));
            ExitCode::from(111)
        }
    }
}

fn sync_once(
    cfg: &Config,
    opts: Options,
    out: &mut CronLog,
    counts: &mut Counts,
    now: u64,
) -> Result<Ran, Failure> {
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    let db = cfg
        .database
        .as_ref()
        .ok_or_else(|| Failure::Temporary("sync needs a [database] section".into()))?;
    let mut store = Store::connect(db, deadline)?;
    // One sync at a time across every host sharing this database (the flock
    // in state_dir only keeps apart the runs of one host). Held by this
    // connection for the whole run; the server lets it go if we die.
    if !opts.dry_run && !store.try_sync_lock(&db.name)? {
        return Ok(Ran::OtherHost(mailcow::sync_lock_name(&db.name)));
    }
    let templates = store.templates()?;
    let mut dir = Directory::new(&cfg.ldap, &cfg.state_dir, deadline);
    let (mut conn, host) = dir.open_bound(&mut Silent)?;
    let filter = sync_filter(cfg);
    out.info(&format!(
        "{}started on {}: base \"{}\", filter {filter}, import_users {}, periodic_full_sync {}, deactivate_missing {}",
        if opts.dry_run { "dry run " } else { "" },
        host.label(),
        cfg.ldap.base_dn,
        cfg.sync.import_users,
        cfg.sync.periodic_full_sync,
        cfg.sync.deactivate_missing
    ));
    // First pass, addresses only: those several entries share, wherever
    // they are in the search, are left alone by the second.
    let mut pairs: Vec<(String, String)> = Vec::new();
    paged_search(&mut conn, cfg, &filter, address_attributes(cfg), |e| {
        if let Ok(a) = entry_address(cfg, &e) {
            pairs.push((e.dn, a));
        }
        Ok(())
    })?;
    // A first pass cut short finds what it can: the second is cut at the
    // same place, fails the run, and keeps the in-page check.
    let conflicts = find_conflicts(pairs.iter().map(|(d, a)| (d.as_str(), a.as_str())));
    drop(pairs);
    let mut attrs: Vec<String> = crate::auth::wanted_attributes(cfg)
        .into_iter()
        .map(str::to_owned)
        .collect();
    attrs.sort();
    attrs.dedup();
    let page_size = cfg.sync.page_size as usize;
    let mut seen: HashSet<String> = HashSet::new();
    let mut batch: Vec<DirUser> = Vec::with_capacity(page_size);
    let now_text = provision::sql_datetime(now);
    let searched = paged_search(&mut conn, cfg, &filter, attrs, |e| {
        counts.entries += 1;
        batch.push(dir_user(cfg, &e));
        if batch.len() >= page_size {
            apply_page(
                cfg, &mut store, &templates, &mut seen, &conflicts, &batch, opts, out, counts,
                &now_text,
            )?;
            batch.clear();
        }
        Ok(())
    })?;
    let _ = conn.unbind();
    // Continuation references (RFC 4511 SearchResultReference): other
    // partitions or servers, which logins do not follow either. Active
    // Directory returns some for every subtree search at the domain root.
    if searched.references > 0 {
        out.info(&format!(
            "skipped {} continuation reference(s) to other partitions or servers (not followed)",
            searched.references
        ));
    }
    let incomplete = searched.incomplete;
    apply_page(
        cfg, &mut store, &templates, &mut seen, &conflicts, &batch, opts, out, counts, &now_text,
    )?;
    drop(batch);

    if cfg.sync.deactivate_missing {
        let mailboxes = store.ldap_mailboxes()?;
        match plan_missing(cfg, &mailboxes, &seen, incomplete.clone(), now) {
            Ok(changes) => {
                for c in changes {
                    apply(cfg, &mut store, &c, opts, out, counts)?;
                }
            }
            Err(hold) => out.warn(&hold.to_string()),
        }
    }
    match incomplete {
        None => Ok(Ran::Done),
        Some(why) => Err(Failure::Temporary(format!(
            "the directory search did not complete: {why}"
        ))),
    }
}

/// What a paged search came to.
struct Searched {
    /// Continuation references met (not followed).
    references: usize,
    /// Why the search did not complete (`None`: it did).
    incomplete: Option<String>,
}

/// One paged search (RFC 2696) of the sync's base with `filter`, each entry
/// handed to `each` as it comes (an error from it stops the search and is
/// returned). A search cut short (an error, a size limit, another result
/// code) is said in [`Searched::incomplete`].
fn paged_search(
    conn: &mut LdapConn,
    cfg: &Config,
    filter: &str,
    attrs: Vec<String>,
    mut each: impl FnMut(UserEntry) -> Result<(), Failure>,
) -> Result<Searched, Failure> {
    let adapters: Vec<Box<dyn Adapter<String, Vec<String>>>> =
        vec![Box::new(PagedResults::new(cfg.sync.page_size as i32))];
    let mut stream = conn
        .with_timeout(cfg.ldap.timeout)
        .streaming_search_with(adapters, &cfg.ldap.base_dn, Scope::Subtree, filter, attrs)
        .map_err(|e| Failure::Temporary(format!("directory search: {e}")))?;
    let mut entries = 0usize;
    let mut references = 0usize;
    let mut incomplete = None;
    loop {
        match stream.next() {
            Ok(Some(e)) if e.is_ref() => references += 1,
            Ok(Some(e)) if e.is_intermediate() => {}
            Ok(Some(e)) => {
                entries += 1;
                each(UserEntry::from_search(SearchEntry::construct(e)))?;
            }
            Ok(None) => break,
            Err(e) => {
                incomplete = Some(format!("search error: {e}"));
                break;
            }
        }
    }
    let res = stream.result();
    if res.rc == rc::SIZE_LIMIT_EXCEEDED && incomplete.is_none() {
        incomplete = Some(size_limit_advice(cfg.ldap.bind_dn.as_deref(), entries));
    }
    if res.rc != rc::SUCCESS && incomplete.is_none() {
        incomplete = Some(
            format!("result code {} {}", res.rc, res.text)
                .trim()
                .to_owned(),
        );
    }
    Ok(Searched {
        references,
        incomplete,
    })
}

#[allow(clippy::too_many_arguments)]
fn apply_page(
    cfg: &Config,
    store: &mut Store,
    templates: &HashMap<String, Template>,
    seen: &mut HashSet<String>,
    conflicts: &Conflicts,
    batch: &[DirUser],
    opts: Options,
    out: &mut CronLog,
    counts: &mut Counts,
    now: &str,
) -> Result<(), Failure> {
    if batch.is_empty() {
        return Ok(());
    }
    if STOP.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Failure::Temporary(
            "stopped by a signal before this page: the run is not complete; the next one starts over"
                .into(),
        ));
    }
    let addresses: Vec<String> = batch
        .iter()
        .filter_map(|u| u.address.clone().ok())
        .collect();
    let rows = store.mailboxes(&addresses)?;
    let changes = plan_page(cfg, batch, &rows, templates, seen, conflicts, now);
    if !opts.dry_run {
        // A page's creations in one domain share transactions of
        // CREATE_BATCH mailboxes: one lock and one count of the domain's
        // mailboxes per batch, not per mailbox, and never the domain row
        // locked across a whole page (first logins in the domain wait for it).
        let mut by_domain: BTreeMap<&str, Vec<&NewMailbox>> = BTreeMap::new();
        for c in &changes {
            if let Change::Create(n) = c {
                by_domain.entry(n.domain.as_str()).or_default().push(n);
            }
        }
        for group in by_domain.values().flat_map(|g| g.chunks(CREATE_BATCH)) {
            let results = store.create_mailboxes(group)?;
            for (new, res) in group.iter().zip(results) {
                let res = res.map(|created| created == Created::Created);
                if res == Ok(true) {
                    crate::auth::apply_rate_limit(cfg, &new.username, new.rate_limit.as_ref());
                }
                report(&describe_create(new), CountAs::Created, res, out, counts)?;
            }
        }
    }
    for c in changes
        .iter()
        .filter(|c| opts.dry_run || !matches!(c, Change::Create(_)))
    {
        apply(cfg, store, c, opts, out, counts)?;
    }
    if !cfg.alias_attributes.is_empty() {
        keep_aliases(store, batch, conflicts, opts, out)?;
    }
    Ok(())
}

/// The directory aliases of the page's users whose `ldap` mailbox exists
/// (now: after the page's creations), each mailbox in one transaction,
/// every change and every conflict with an alias someone else made logged
/// to the Crontasks log (once per run: each entry is seen once).
fn keep_aliases(
    store: &mut Store,
    batch: &[DirUser],
    conflicts: &Conflicts,
    opts: Options,
    out: &mut CronLog,
) -> Result<(), Failure> {
    for u in batch {
        let Ok(address) = &u.address else { continue };
        if conflicts.contains_key(address) {
            continue;
        }
        for why in &u.aliases.1 {
            out.warn(&format!("{address}: alias skipped: {why}"));
        }
        let changes = match store.keep_directory_aliases(address, &u.aliases.0, opts.dry_run) {
            Ok(c) => c,
            Err(Failure::Temporary(why)) => return Err(Failure::Temporary(why)),
            Err(f) => {
                out.error(&format!("could not keep the aliases of {address}: {f}"));
                continue;
            }
        };
        for c in changes {
            let text = c.describe(address);
            match c {
                _ if c.writes() && opts.dry_run => out.info(&format!("would: {text}")),
                mailcow::AliasChange::Conflict { .. }
                | mailcow::AliasChange::LimitReached { .. } => out.warn(&text),
                _ => out.info(&text),
            }
        }
    }
    Ok(())
}

/// Apply one change. Per-user refusals are reported and counted; a database
/// outage stops the run.
fn apply(
    cfg: &Config,
    store: &mut Store,
    c: &Change,
    opts: Options,
    out: &mut CronLog,
    counts: &mut Counts,
) -> Result<(), Failure> {
    if let Change::Skip { .. } = c {
        counts.skipped += 1;
        out.info(&c.describe());
        return Ok(());
    }
    // An error, as the run's other per-user failures; in a dry run too.
    if let Change::Conflict { .. } = c {
        counts.conflicts += 1;
        out.error(&c.describe());
        return Ok(());
    }
    if opts.dry_run {
        out.info(&format!("would {}", c.describe()));
        bump(counts, c.count_as());
        return Ok(());
    }
    let res = match c {
        Change::Create(new) => store
            .create_mailbox(new)
            .map(|created| created == Created::Created),
        Change::Update(u) => store.update_mailbox(u).inspect(|&hit| {
            if hit {
                crate::auth::apply_rate_limit(cfg, &u.username, u.rate_limit.as_ref());
            }
        }),
        // What the row says now decides, not what the plan read: counters
        // report what this run changed.
        Change::Reactivate { username, .. } => {
            return match store.found_present(username) {
                Ok(Presence::Reactivated) => report(
                    &format!("reactivate {username} (back in the directory)"),
                    CountAs::Reactivated,
                    Ok(true),
                    out,
                    counts,
                ),
                Ok(Presence::Cleared) => report(
                    &format!("clear missing mark of {username} (back in the directory)"),
                    CountAs::Cleared,
                    Ok(true),
                    out,
                    counts,
                ),
                Ok(Presence::Unchanged) => Ok(()),
                Err(f) => report(&c.describe(), CountAs::Reactivated, Err(f), out, counts),
            };
        }
        Change::MarkMissing { username, since } => store.mark_missing(username, *since),
        Change::Deactivate {
            username,
            marked_before,
        } => store.deactivate(username, *marked_before),
        Change::Retire {
            username, action, ..
        } => store.retire(username, *action),
        Change::Unretire { username } => store.unretire(username),
        Change::Skip { .. } | Change::Conflict { .. } => Ok(false),
    };
    report(&c.describe(), c.count_as(), res, out, counts)
}

/// Which counter a change adds to.
#[derive(Debug, Clone, Copy)]
enum CountAs {
    Created,
    Updated,
    Reactivated,
    Cleared,
    Marked,
    Deactivated,
    Retired,
    Unretired,
    Skipped,
    Conflict,
}

impl Change {
    fn count_as(&self) -> CountAs {
        match self {
            Change::Create(_) => CountAs::Created,
            Change::Update(_) => CountAs::Updated,
            Change::Reactivate {
                was_deactivated: true,
                ..
            } => CountAs::Reactivated,
            Change::Reactivate { .. } => CountAs::Cleared,
            Change::MarkMissing { .. } => CountAs::Marked,
            Change::Deactivate { .. } => CountAs::Deactivated,
            Change::Retire { .. } => CountAs::Retired,
            Change::Unretire { .. } => CountAs::Unretired,
            Change::Skip { .. } => CountAs::Skipped,
            Change::Conflict { .. } => CountAs::Conflict,
        }
    }
}

/// Count and log what applying one change did. `Ok(false)`: nothing to
/// report (created concurrently by a login). A temporary failure stops the run.
fn report(
    what: &str,
    kind: CountAs,
    res: Result<bool, Failure>,
    out: &mut CronLog,
    counts: &mut Counts,
) -> Result<(), Failure> {
    match res {
        Ok(true) => {
            bump(counts, kind);
            out.info(what);
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(Failure::Temporary(why)) => Err(Failure::Temporary(why)),
        Err(f) => {
            counts.failed += 1;
            // An error, as mailcow's crons/ldap-sync.php logs "Could not create user".
            out.error(&format!("could not {what}: {f}"));
            Ok(())
        }
    }
}

fn bump(counts: &mut Counts, kind: CountAs) {
    match kind {
        CountAs::Created => counts.created += 1,
        CountAs::Updated => counts.updated += 1,
        CountAs::Reactivated => counts.reactivated += 1,
        CountAs::Cleared => counts.cleared += 1,
        CountAs::Marked => counts.marked += 1,
        CountAs::Deactivated => counts.deactivated += 1,
        CountAs::Retired => counts.retired += 1,
        CountAs::Unretired => counts.unretired += 1,
        CountAs::Skipped => counts.skipped += 1,
        CountAs::Conflict => counts.conflicts += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str, UiSettings};

    fn cfg(extra: &str) -> Config {
        parse_str(&format!(
            "[ldap]\nhosts = \"h\"\nbase_dn = \"dc=x\"\nattribute_field = \"ou\"\n\
             [[attribute_mapping]]\nattribute = \"a\"\ntemplate = \"T\"\n{extra}"
        ))
        .unwrap()
        .validate(Path::new("t"), UiSettings::default())
        .unwrap()
    }

    fn template() -> HashMap<String, Template> {
        let text = r#"{"quota":0,"imap_access":1}"#;
        let t = Template::new("T".into(), Some(text.into()));
        HashMap::from([("T".to_owned(), t)])
    }

    fn user(addr: &str, template: Option<&str>) -> DirUser {
        DirUser {
            dn: format!("uid={addr}"),
            address: Ok(addr.into()),
            name: "N".into(),
            mapped_template: template.map(str::to_owned),
            template: template.map(str::to_owned),
            retire: None,
            aliases: Default::default(),
        }
    }

    fn row(addr: &str, authsource: &str, attrs: &str) -> MailboxRow {
        MailboxRow {
            username: addr.into(),
            name: "N".into(),
            domain: "x".into(),
            active: 1,
            authsource: authsource.into(),
            quota: 0,
            attributes: serde_json::from_str(attrs).unwrap(),
            domain_active: Some(true),
        }
    }

    #[test]
    fn a_failed_run_backs_off_up_to_the_interval() {
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(0, hour), Duration::ZERO);
        assert_eq!(backoff(1, hour), Duration::from_secs(120));
        assert_eq!(backoff(2, hour), Duration::from_secs(240));
        assert_eq!(backoff(5, hour), Duration::from_secs(1920));
        assert_eq!(backoff(6, hour), hour);
        assert_eq!(backoff(u32::MAX, hour), hour);
        let failed = SyncState {
            last_completed: Some(0),
            last_attempt: Some(10_000),
            failures: 2,
        };
        assert!(not_now(&failed, 10_239, hour)
            .unwrap()
            .contains("backing off"));
        assert_eq!(not_now(&failed, 10_240, hour), None);
        // A complete run within the interval: not due; long ago: due.
        let done = SyncState {
            last_completed: Some(10_000),
            last_attempt: Some(10_000),
            failures: 0,
        };
        assert!(not_now(&done, 10_100, hour).unwrap().contains("not due"));
        assert_eq!(not_now(&done, 13_600, hour), None);
        // A failure after a complete run is not hidden by "not due".
        let again = SyncState {
            failures: 1,
            last_attempt: Some(10_050),
            ..done
        };
        assert!(not_now(&again, 10_100, hour)
            .unwrap()
            .contains("backing off"));
        assert_eq!(not_now(&again, 10_050 + 120, hour), None);
        assert_eq!(not_now(&SyncState::default(), 5, hour), None);
    }

    #[test]
    fn filter_for_the_sync() {
        assert_eq!(sync_filter(&cfg("")), "(&(mail=*)(ou=*))");
        assert_eq!(
            sync_filter(&cfg("[provisioning]\ndefault_template = \"T\"\n")),
            "(&(mail=*))"
        );
        assert_eq!(
            sync_filter(&cfg(
                "[provisioning]\ndefault_template = \"T\"\n[sync]\nimport_requires_attribute = true\n"
            )),
            "(&(mail=*)(ou=*))",
            "mailcow's rule"
        );
        let c = cfg("").ldap.clone();
        let _ = c;
        let mut c = cfg("");
        c.ldap.filter = FilterTemplate::Placeholder("(|(uid=%u)(mail=%s))".into());
        assert_eq!(sync_filter(&c), "(&(|(uid=*)(mail=*))(mail=*)(ou=*))");
    }

    #[test]
    fn plan_imports_updates_and_leaves_mailcow_alone() {
        let c = cfg("[sync]\nimport_users = true\nperiodic_full_sync = true\n");
        let t = template();
        let hash = provision::template_hash(&t["T"].text);
        let rows = HashMap::from([
            (
                "old@x".to_owned(),
                row(
                    "old@x",
                    "ldap",
                    &format!("{{\"attribute_hash\":\"{hash}\"}}"),
                ),
            ),
            (
                "stale@x".to_owned(),
                row("stale@x", "ldap", "{\"attribute_hash\":\"old\"}"),
            ),
            ("local@x".to_owned(), row("local@x", "mailcow", "{}")),
        ]);
        let users = [
            user("new@x", Some("T")),
            user("old@x", Some("T")),
            user("stale@x", Some("T")),
            user("local@x", Some("T")),
            user("nomap@x", None),
            user("new@x", Some("T")),
        ];
        let mut seen = HashSet::new();
        let plan = plan_page(&c, &users, &rows, &t, &mut seen, &Conflicts::new(), "now");
        // new@x twice in the page: left alone, reported once for both
        // entries (as a login is refused).
        assert!(
            matches!(&plan[0], Change::Conflict { address, dns, attribute } if address == "new@x" && dns.len() == 2 && attribute == "mail"),
            "{plan:?}"
        );
        assert!(plan[0]
            .describe()
            .contains("give each entry its own address (mail)"));
        assert!(matches!(&plan[1], Change::Update(u) if u.username == "stale@x"));
        assert!(matches!(&plan[2], Change::Skip { who, .. } if who == "nomap@x"));
        assert_eq!(plan.len(), 3, "{plan:?}");
        assert_eq!(seen.len(), 5);
        // Across pages, found by the run's first pass: left alone on the
        // first page already.
        let conflicts =
            find_conflicts([("uid=a", "twin@x"), ("uid=b", "twin@x"), ("uid=c", "old@x")]);
        assert_eq!(conflicts.len(), 1);
        let plan = plan_page(
            &c,
            &[user("twin@x", Some("T"))],
            &rows,
            &t,
            &mut HashSet::new(),
            &conflicts,
            "now",
        );
        assert!(
            matches!(&plan[..], [Change::Conflict { address, dns, .. }] if address == "twin@x" && dns == &["uid=a", "uid=b"]),
            "{plan:?}"
        );
        // Across pages, an entry added after the first pass: the later one is skipped.
        let plan = plan_page(
            &c,
            &users[..1],
            &rows,
            &t,
            &mut seen,
            &Conflicts::new(),
            "now",
        );
        assert!(
            matches!(&plan[0], Change::Skip { reason, .. } if reason.contains("same address")),
            "{plan:?}"
        );
        // Import off: nothing created; full sync off: nothing updated.
        let c = cfg("[sync]\nimport_users = false\nperiodic_full_sync = false\n");
        let plan = plan_page(
            &c,
            &users[..3],
            &rows,
            &t,
            &mut HashSet::new(),
            &Conflicts::new(),
            "now",
        );
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn plan_reactivates_only_what_sync_deactivated() {
        let c = cfg("[sync]\nimport_users = true\n");
        let rows = HashMap::from([
            (
                "gone@x".to_owned(),
                row(
                    "gone@x",
                    "ldap",
                    "{\"ldap_sync_deactivated\":\"1\",\"ldap_missing_since\":\"5\"}",
                ),
            ),
            (
                "marked@x".to_owned(),
                row("marked@x", "ldap", "{\"ldap_missing_since\":\"5\"}"),
            ),
            ("admin@x".to_owned(), {
                let mut r = row("admin@x", "ldap", "{}");
                r.active = 0;
                r
            }),
        ]);
        let users = [
            user("gone@x", Some("T")),
            user("marked@x", Some("T")),
            user("admin@x", Some("T")),
        ];
        let plan = plan_page(
            &c,
            &users,
            &rows,
            &template(),
            &mut HashSet::new(),
            &Conflicts::new(),
            "now",
        );
        assert_eq!(
            plan,
            vec![
                Change::Reactivate {
                    username: "gone@x".into(),
                    was_deactivated: true
                },
                Change::Reactivate {
                    username: "marked@x".into(),
                    was_deactivated: false
                },
            ]
        );
    }

    fn mb(u: &str, active: i64, since: Option<u64>, deact: bool) -> LdapMailbox {
        LdapMailbox {
            username: u.into(),
            active,
            missing_since: since,
            deactivated_by_sync: deact,
        }
    }

    #[test]
    fn departures_are_marked_then_deactivated_after_the_grace() {
        let c = cfg("[sync]\nimport_users = true\ndeactivate_missing = true\nmissing_grace_hours = 1\nmax_deactivate_percent = 50\n");
        let boxes = [
            mb("a@x", 1, None, false),
            mb("b@x", 1, Some(1000), false),
            mb("c@x", 1, Some(1000 + 3599), false),
            mb("d@x", 0, Some(1), true),
            mb("e@x", 0, None, false),
            mb("f@x", 1, None, false),
            mb("g@x", 1, None, false),
            mb("h@x", 1, None, false),
        ];
        let seen: HashSet<String> = ["f@x", "g@x", "h@x"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let plan = plan_missing(&c, &boxes, &seen, None, 1000 + 3600).unwrap();
        assert_eq!(
            plan,
            vec![
                Change::MarkMissing {
                    username: "a@x".into(),
                    since: 4600
                },
                Change::Deactivate {
                    username: "b@x".into(),
                    marked_before: 1000,
                },
                Change::Skip {
                    who: "c@x".into(),
                    reason: "missing from the directory, within the grace period".into()
                },
            ]
        );
        // An incomplete search touches nothing.
        assert!(matches!(
            plan_missing(&c, &boxes, &seen, Some("x".into()), 5000),
            Err(Hold::Incomplete(_))
        ));
        // Over the cap: 3 of 8 missing is 37.5 % > 30 %.
        let c30 = cfg(
            "[sync]\nimport_users = true\ndeactivate_missing = true\nmax_deactivate_percent = 30\n",
        );
        assert!(matches!(
            plan_missing(&c30, &boxes, &seen, None, 5000),
            Err(Hold::OverCap {
                missing: 3,
                total: 8,
                percent: 30
            })
        ));
        // Off: nothing.
        assert!(plan_missing(&cfg(""), &boxes, &seen, None, 5000)
            .unwrap()
            .is_empty());
    }
}
