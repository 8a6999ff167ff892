//! Memory of directory hosts that failed recently, shared between the
//! short-lived checkpassword processes through a small file in `state_dir`
//! (and kept in memory by `serve`).
//!
//! A host that failed is tried *last* (never skipped) until `host_retry_seconds`
//! have passed, so one dead server costs one timeout, not one per login.
//! When the retry time comes, ONE login claims the probe (a lease written to
//! the file under a lock) and tries the host in its configured place; every
//! other login keeps it last until the probe has answered or the lease has
//! run out (the prober's own time limit: a crashed prober cannot keep the host
//! out of use for longer than one login's `login_timeout_ms`).
//!
//! The file is advisory: when it is missing, unreadable, not a regular file or
//! not writable, hosts are simply tried in the configured order. Changes are
//! applied to the file as it is when they are saved (under the lock), so two
//! processes never undo each other's marks.

use crate::config::Host;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::time::Duration;

const FILE_NAME: &str = "host-health.json";
const LOCK_NAME: &str = "host-health.lock";
/// Larger files are not ours: ignored.
const MAX_FILE: u64 = 64 * 1024;
/// How long a login waits for the lock before going on without it.
const LOCK_WAIT: Duration = Duration::from_millis(50);

/// What is remembered about one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Unix time (ms) of the last failure.
    pub failed_ms: u64,
    /// Unix time (ms) until which one login probes the host; nobody else does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_until_ms: Option<u64>,
}

/// A change one process made, applied to the file as it is at save time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Failed(String, u64),
    Ok(String),
    Claim(String, u64),
}

/// Host label -> its mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHealth {
    marks: BTreeMap<String, Mark>,
    changes: Vec<Change>,
    /// Whether changes are recorded for [`HostHealth::save`] (not in `serve`'s memory).
    record: bool,
}

impl Default for HostHealth {
    fn default() -> HostHealth {
        HostHealth {
            marks: BTreeMap::new(),
            changes: Vec::new(),
            record: true,
        }
    }
}

impl HostHealth {
    /// Load from `state_dir`; anything wrong with the file means "no memory".
    pub fn load(state_dir: &Path) -> HostHealth {
        HostHealth {
            marks: read_marks(state_dir),
            ..HostHealth::default()
        }
    }

    /// A memory that is never saved (`serve` keeps one for all its requests).
    pub fn in_memory() -> HostHealth {
        HostHealth {
            record: false,
            ..HostHealth::default()
        }
    }

    fn record(&mut self, c: Change) {
        if self.record {
            self.changes.push(c);
        }
    }

    /// Whether `host` is still in its retry window at `now_ms`: it failed less
    /// than `retry` ago, or another login holds a live probe lease on it.
    fn held_back(&self, host: &Host, now_ms: u64, retry: Duration) -> bool {
        let Some(m) = self.marks.get(&host.label()) else {
            return false;
        };
        in_window(m, now_ms, retry) || m.probe_until_ms.is_some_and(|u| now_ms < u)
    }

    /// Hosts in the order to try them at `now_ms`: those without a recent
    /// failure in configured order, then the held-back ones in configured
    /// order. Claims nothing (see [`HostHealth::plan`]).
    pub fn order(&self, hosts: &[Host], now_ms: u64, retry: Duration) -> Vec<Host> {
        let (bad, good): (Vec<&Host>, Vec<&Host>) =
            hosts.iter().partition(|h| self.held_back(h, now_ms, retry));
        good.into_iter().chain(bad).cloned().collect()
    }

    /// Hosts whose retry window has passed and that nobody probes: the next
    /// login claims them (see [`HostHealth::plan`]).
    pub fn due(&self, hosts: &[Host], now_ms: u64, retry: Duration) -> Vec<Host> {
        hosts
            .iter()
            .filter(|h| self.marks.contains_key(&h.label()) && !self.held_back(h, now_ms, retry))
            .cloned()
            .collect()
    }

    /// Claim the probe of every due host until `now_ms + lease`, then order
    /// as [`HostHealth::order`] does, except that a host claimed here is back
    /// in its configured place. Returns the order and the hosts claimed.
    pub fn plan(
        &mut self,
        hosts: &[Host],
        now_ms: u64,
        retry: Duration,
        lease: Duration,
    ) -> (Vec<Host>, Vec<Host>) {
        let until = now_ms.saturating_add(lease.as_millis() as u64);
        let claimed = self.due(hosts, now_ms, retry);
        for h in &claimed {
            let label = h.label();
            if let Some(m) = self.marks.get_mut(&label) {
                m.probe_until_ms = Some(until);
            }
            self.record(Change::Claim(label, until));
        }
        let (bad, good): (Vec<&Host>, Vec<&Host>) = hosts
            .iter()
            .partition(|h| !claimed.contains(h) && self.held_back(h, now_ms, retry));
        (good.into_iter().chain(bad).cloned().collect(), claimed)
    }

    /// When `host` failed (unix seconds), if it is held back at `now`
    /// (seconds): it failed less than `retry` ago, or another login probes it.
    pub fn is_marked(&self, host: &Host, now: u64, retry: Duration) -> Option<u64> {
        let m = self.marks.get(&host.label())?;
        // Anywhere in that second.
        let now_ms = now.saturating_mul(1000).saturating_add(999);
        self.held_back(host, now_ms, retry)
            .then_some(m.failed_ms / 1000)
    }

    /// Whether a probe lease on `host` is live at `now_ms`.
    pub fn probing(&self, host: &Host, now_ms: u64) -> bool {
        self.marks
            .get(&host.label())
            .and_then(|m| m.probe_until_ms)
            .is_some_and(|u| now_ms < u)
    }

    pub fn mark_failed(&mut self, host: &Host, now_ms: u64) {
        let label = host.label();
        self.marks.insert(
            label.clone(),
            Mark {
                failed_ms: now_ms,
                probe_until_ms: None,
            },
        );
        self.record(Change::Failed(label, now_ms));
    }

    pub fn mark_ok(&mut self, host: &Host) {
        let label = host.label();
        if self.marks.remove(&label).is_some() {
            self.record(Change::Ok(label));
        }
    }

    /// Apply this process's changes to `other` (the file as it is now).
    fn apply_to(&self, other: &mut BTreeMap<String, Mark>) {
        for c in &self.changes {
            match c {
                Change::Failed(l, t) => {
                    other.insert(
                        l.clone(),
                        Mark {
                            failed_ms: *t,
                            probe_until_ms: None,
                        },
                    );
                }
                Change::Ok(l) => {
                    other.remove(l);
                }
                Change::Claim(l, until) => {
                    if let Some(m) = other.get_mut(l) {
                        m.probe_until_ms = Some(*until);
                    }
                }
            }
        }
    }

    /// The claim step of a one-shot process: when a host is due, re-read
    /// the file under its lock, claim what is still due and write it back at
    /// once. Returns the order to try and the hosts claimed. Without the lock
    /// (not to be had within a few ms), nothing is claimed and due hosts stay last.
    pub fn plan_shared(
        &mut self,
        state_dir: &Path,
        hosts: &[Host],
        now_ms: u64,
        retry: Duration,
        lease: Duration,
    ) -> (Vec<Host>, Vec<Host>) {
        if self.due(hosts, now_ms, retry).is_empty() {
            return (self.order(hosts, now_ms, retry), Vec::new());
        }
        let Some(_lock) = lock(state_dir) else {
            let (bad, good): (Vec<&Host>, Vec<&Host>) = hosts
                .iter()
                .partition(|h| self.marks.contains_key(&h.label()));
            return (good.into_iter().chain(bad).cloned().collect(), Vec::new());
        };
        self.marks = read_marks(state_dir);
        let planned = self.plan(hosts, now_ms, retry, lease);
        if !planned.1.is_empty() {
            write_marks(state_dir, &self.marks);
        }
        // Written already: only what happens next is left to save.
        self.changes.retain(|c| !matches!(c, Change::Claim(..)));
        planned
    }

    /// Write back what this process changed, applied under the lock to the
    /// file as it is now. Errors are ignored on purpose (the state is a hint).
    pub fn save(&self, state_dir: &Path) {
        if self.changes.is_empty() {
            return;
        }
        let Some(_lock) = lock(state_dir) else {
            return;
        };
        let mut now = read_marks(state_dir);
        let before = now.clone();
        self.apply_to(&mut now);
        if now != before {
            write_marks(state_dir, &now);
        }
    }
}

fn in_window(m: &Mark, now_ms: u64, retry: Duration) -> bool {
    m.failed_ms <= now_ms && now_ms < m.failed_ms.saturating_add(retry.as_millis() as u64)
}

fn read_marks(state_dir: &Path) -> BTreeMap<String, Mark> {
    crate::state_dir::read_small(state_dir, FILE_NAME, MAX_FILE)
        .and_then(|buf| serde_json::from_slice(&buf).ok())
        .unwrap_or_default()
}

/// A whole new file renamed over the old one, so readers see a whole file.
fn write_marks(state_dir: &Path, marks: &BTreeMap<String, Mark>) {
    if let Ok(json) = serde_json::to_vec(marks) {
        let _ = crate::state_dir::write_atomic(state_dir, FILE_NAME, &json);
    }
}

/// The lock beside the file, if it can be had within [`LOCK_WAIT`].
fn lock(state_dir: &Path) -> Option<File> {
    let f = crate::state_dir::open_regular(state_dir, LOCK_NAME, true).ok()?;
    let until = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match f.try_lock() {
            Ok(()) => return Some(f),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return None,
        }
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// Milliseconds since the epoch.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str) -> Host {
        Host {
            name: n.into(),
            port: 389,
        }
    }

    const S: u64 = 1000;

    #[test]
    fn failed_hosts_go_last_until_retry_passes() {
        let hosts = [h("a"), h("b"), h("c")];
        let mut s = HostHealth::default();
        let retry = Duration::from_secs(30);
        assert_eq!(s.order(&hosts, 100 * S, retry), hosts.to_vec());
        s.mark_failed(&h("a"), 100 * S);
        assert_eq!(
            s.order(&hosts, 110 * S, retry),
            vec![h("b"), h("c"), h("a")]
        );
        // After the retry period the host is due, but `order` claims nothing.
        assert_eq!(s.due(&hosts, 130 * S, retry), vec![h("a")]);
        // All marked: all still tried, in configured order.
        s.mark_failed(&h("b"), 100 * S);
        s.mark_failed(&h("c"), 100 * S);
        assert_eq!(s.order(&hosts, 101 * S, retry), hosts.to_vec());
        s.mark_ok(&h("b"));
        assert_eq!(
            s.order(&hosts, 101 * S, retry),
            vec![h("b"), h("a"), h("c")]
        );
    }

    #[test]
    fn one_probe_per_window_and_a_lease_that_runs_out() {
        let hosts = [h("a"), h("b")];
        let retry = Duration::from_secs(30);
        let lease = Duration::from_secs(10);
        let mut file = HostHealth::default();
        file.mark_failed(&h("a"), 100 * S);
        // The window passes: the first login claims the probe and tries a first.
        let mut first = file.clone();
        assert_eq!(
            first.plan(&hosts, 131 * S, retry, lease).0,
            vec![h("a"), h("b")]
        );
        first.apply_to(&mut file.marks);
        // Everyone else keeps a last while the probe runs.
        let mut second = file.clone();
        let (order, claimed) = second.plan(&hosts, 132 * S, retry, lease);
        assert_eq!(order, vec![h("b"), h("a")]);
        assert!(claimed.is_empty(), "{claimed:?}");
        // The prober crashed: once its lease ran out, the next login probes.
        let mut third = file.clone();
        assert_eq!(
            third.plan(&hosts, 141 * S, retry, lease).0,
            vec![h("a"), h("b")]
        );
        // The probe failed: a new window, no lease.
        third.mark_failed(&h("a"), 142 * S);
        third.apply_to(&mut file.marks);
        assert_eq!(file.marks[&h("a").label()].probe_until_ms, None);
        assert_eq!(
            file.clone().plan(&hosts, 150 * S, retry, lease).0,
            vec![h("b"), h("a")]
        );
    }

    #[test]
    fn changes_are_merged_into_the_file_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = [h("a"), h("b")];
        let retry = Duration::from_secs(30);
        let now = unix_now_ms();
        // Two processes read the same (empty) file; one marks a, the other b.
        let mut p1 = HostHealth::load(dir.path());
        let mut p2 = HostHealth::load(dir.path());
        p1.mark_failed(&h("a"), now);
        p2.mark_failed(&h("b"), now);
        p1.save(dir.path());
        p2.save(dir.path());
        let back = HostHealth::load(dir.path());
        assert!(back.is_marked(&h("a"), now / 1000, retry).is_some());
        assert!(back.is_marked(&h("b"), now / 1000, retry).is_some());
        // One claim per window across processes.
        let later = now + 31 * S;
        let lease = Duration::from_secs(5);
        let mut c1 = HostHealth::load(dir.path());
        let mut c2 = HostHealth::load(dir.path());
        let (o1, claimed) = c1.plan_shared(dir.path(), &hosts, later, retry, lease);
        assert_eq!((o1, claimed), (hosts.to_vec(), hosts.to_vec()));
        // c2 read the file before c1 claimed, but claims under the lock after a re-read.
        let (o2, claimed) = c2.plan_shared(dir.path(), &hosts, later, retry, lease);
        assert_eq!(
            o2,
            hosts.to_vec(),
            "both held back for c2: configured order"
        );
        assert!(claimed.is_empty(), "c2 must not claim: {claimed:?}");
        // c1's probe of a succeeds: a is forgotten, b's lease stays.
        c1.mark_ok(&h("a"));
        c1.save(dir.path());
        let back = HostHealth::load(dir.path());
        assert!(back.is_marked(&h("a"), later / 1000, retry).is_none());
        assert!(back.probing(&h("b"), later));
    }

    #[test]
    fn garbage_links_and_fifos_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        assert_eq!(HostHealth::load(dir.path()), HostHealth::default());
        // A link is not followed, for reading or for the lock.
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, br#"{"a:389":{"failed_ms":1}}"#).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(HostHealth::load(dir.path()), HostHealth::default());
        std::os::unix::fs::symlink(&victim, dir.path().join(LOCK_NAME)).unwrap();
        let mut s = HostHealth::default();
        s.mark_failed(&h("x"), 5);
        s.save(dir.path());
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            br#"{"a:389":{"failed_ms":1}}"#
        );
        // A missing directory is not an error.
        HostHealth::load(Path::new("/nonexistent/dir"));
        s.save(Path::new("/nonexistent/dir"));
    }
}
