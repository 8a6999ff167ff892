//! Memory of directory hosts that failed recently, shared between the
//! short-lived checkpassword processes through a small file in `state_dir`.
//!
//! A host that failed is tried *last* (never skipped) until `host_retry_seconds`
//! have passed, so one dead server costs one timeout, not one per login.
//! The file is advisory: when it is missing, unreadable or not writable,
//! hosts are simply tried in the configured order.

use crate::config::Host;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FILE_NAME: &str = "host-health.json";

/// Host label -> unix time (seconds) of its last failure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostHealth {
    failed_at: BTreeMap<String, u64>,
    changed: bool,
}

impl HostHealth {
    /// Load from `state_dir`; anything wrong with the file means "no memory".
    pub fn load(state_dir: &Path) -> HostHealth {
        let failed_at = std::fs::read(state_dir.join(FILE_NAME))
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, u64>>(&b).ok())
            .unwrap_or_default();
        HostHealth {
            failed_at,
            changed: false,
        }
    }

    /// Hosts in the order to try them at time `now`: those without a recent
    /// failure in configured order, then the recently failed ones in configured order.
    pub fn order(&self, hosts: &[Host], now: u64, retry: Duration) -> Vec<Host> {
        let (bad, good): (Vec<&Host>, Vec<&Host>) = hosts
            .iter()
            .partition(|h| self.is_marked(h, now, retry).is_some());
        good.into_iter().chain(bad).cloned().collect()
    }

    /// When `host` failed, if that was less than `retry` ago.
    pub fn is_marked(&self, host: &Host, now: u64, retry: Duration) -> Option<u64> {
        self.failed_at
            .get(&host.label())
            .copied()
            .filter(|&t| now < t.saturating_add(retry.as_secs()) && t <= now)
    }

    pub fn mark_failed(&mut self, host: &Host, now: u64) {
        self.failed_at.insert(host.label(), now);
        self.changed = true;
    }

    pub fn mark_ok(&mut self, host: &Host) {
        if self.failed_at.remove(&host.label()).is_some() {
            self.changed = true;
        }
    }

    /// Write back if anything changed: to a temporary file, then renamed over
    /// the old one, so concurrent readers see a whole file. Errors are ignored
    /// on purpose (the state is only a hint).
    pub fn save(&self, state_dir: &Path) {
        if !self.changed {
            return;
        }
        let Ok(json) = serde_json::to_vec(&self.failed_at) else {
            return;
        };
        let tmp: PathBuf = state_dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, json).is_ok()
            && std::fs::rename(&tmp, state_dir.join(FILE_NAME)).is_err()
        {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
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

    #[test]
    fn failed_hosts_go_last_until_retry_passes() {
        let hosts = [h("a"), h("b"), h("c")];
        let mut s = HostHealth::default();
        let retry = Duration::from_secs(30);
        assert_eq!(s.order(&hosts, 100, retry), hosts.to_vec());
        s.mark_failed(&h("a"), 100);
        assert_eq!(s.order(&hosts, 110, retry), vec![h("b"), h("c"), h("a")]);
        // After the retry period the configured order is back.
        assert_eq!(s.order(&hosts, 130, retry), hosts.to_vec());
        // All marked: all still tried, in configured order.
        s.mark_failed(&h("b"), 100);
        s.mark_failed(&h("c"), 100);
        assert_eq!(s.order(&hosts, 101, retry), hosts.to_vec());
        s.mark_ok(&h("b"));
        assert_eq!(s.order(&hosts, 101, retry), vec![h("b"), h("a"), h("c")]);
    }

    #[test]
    fn round_trip_through_file_and_garbage_is_ignored() {
        let dir = std::env::temp_dir().join(format!("mla-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = HostHealth::default();
        s.mark_failed(&h("a"), 42);
        s.save(&dir);
        let back = HostHealth::load(&dir);
        assert_eq!(
            back.is_marked(&h("a"), 50, Duration::from_secs(30)),
            Some(42)
        );
        std::fs::write(dir.join(FILE_NAME), b"{not json").unwrap();
        assert_eq!(HostHealth::load(&dir), HostHealth::default());
        // A missing directory is not an error.
        HostHealth::load(Path::new("/nonexistent/dir"));
        s.save(Path::new("/nonexistent/dir"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
