//! Prometheus metrics (`prometheus-client`), served as text on
//! `serve.metrics_listen` (`GET /metrics`; off by default). Counters and
//! histograms are kept as requests go; the gauges (connections, decision
//! threads, LDAP and database pools, host health) are read from serve's
//! state at each scrape. Every name is documented in README's serve section.
//!
//! For another pool's gauges, add a field to [`Pools`], fill it in
//! `Runtime::pool_metrics` and set it in [`Metrics::encode`]; names go under
//! the same `mailcow_ldap_auth_` prefix (`ldap_*` for searches, `ldap_bind_*`
//! for the bind pool, `db_*` for the database).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

use crate::outcome::{RequestKind, Verdict};

/// Which listener a request came through.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Front {
    Http,
    Saslauthd,
}

impl Front {
    fn label(self) -> &'static str {
        match self {
            Front::Http => "http",
            Front::Saslauthd => "saslauthd",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontLabels {
    frontend: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    frontend: &'static str,
    kind: &'static str,
    service: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    frontend: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

type Histograms = Family<FrontLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// The service label: the names Dovecot, Postfix and mailcow send, else
/// "other" (the client chooses the text; the label set must stay small).
pub fn service_label(service: Option<&str>) -> &'static str {
    const KNOWN: [&str; 13] = [
        "imap",
        "pop3",
        "smtp",
        "submission",
        "sieve",
        "managesieve",
        "lmtp",
        "lda",
        "doveadm",
        "sogo",
        "eas",
        "dav",
        "http",
    ];
    match service.filter(|s| !s.is_empty()) {
        None => "none",
        Some(s) => KNOWN.iter().find(|k| **k == s).copied().unwrap_or("other"),
    }
}

/// State read at scrape time.
#[derive(Debug, Default)]
pub struct Pools {
    pub connections: Vec<(Front, usize)>,
    pub decision_threads: Vec<(Front, usize)>,
    pub decisions_busy: Vec<(Front, usize)>,
    pub panics: Vec<(Front, u64)>,
    pub ldap_idle: usize,
    pub ldap_max_idle: usize,
    pub ldap_bind_idle: usize,
    pub ldap_bind_max_idle: usize,
    pub db_open: usize,
    pub db_max: usize,
    /// Requests that waited for a database connection, and for how long in all.
    pub db_waits: u64,
    pub db_wait_seconds: f64,
    /// Each directory host: not marked failed (1) or marked (0).
    pub hosts: Vec<(String, bool)>,
}

pub struct Metrics {
    registry: Registry,
    logins: Family<LoginLabels, Counter>,
    latency: Histograms,
    queue_wait: Histograms,
    refused: Family<RefusedLabels, Counter>,
    accept_errors: Family<FrontLabels, Counter>,
    connections: Family<FrontLabels, Gauge>,
    decision_threads: Family<FrontLabels, Gauge>,
    decisions_busy: Family<FrontLabels, Gauge>,
    panics: Family<FrontLabels, Gauge>,
    ldap_idle: Gauge,
    ldap_max_idle: Gauge,
    ldap_bind_idle: Gauge,
    ldap_bind_max_idle: Gauge,
    db_open: Gauge,
    db_max: Gauge,
    db_waits: Gauge,
    db_wait_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    host_up: Family<HostLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mailcow_ldap_auth");
        let m = Metrics {
            registry: Registry::default(),
            logins: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            queue_wait: Family::new_with_constructor(latency_histogram),
            refused: Family::default(),
            accept_errors: Family::default(),
            connections: Family::default(),
            decision_threads: Family::default(),
            decisions_busy: Family::default(),
            panics: Family::default(),
            ldap_idle: Gauge::default(),
            ldap_max_idle: Gauge::default(),
            ldap_bind_idle: Gauge::default(),
            ldap_bind_max_idle: Gauge::default(),
            db_open: Gauge::default(),
            db_max: Gauge::default(),
            db_waits: Gauge::default(),
            db_wait_seconds: Gauge::default(),
            host_up: Family::default(),
        };
        registry.register(
            "logins",
            "Decisions made, by front end, request kind (auth, lookup), service and result",
            m.logins.clone(),
        );
        registry.register(
            "login_duration_seconds",
            "Time a decision took on its thread (LDAP and database work)",
            m.latency.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time a complete request waited for a free decision thread",
            m.queue_wait.clone(),
        );
        registry.register(
            "refused",
            "Requests or connections refused: capacity (no decision thread within queue_timeout_ms), deadline (head or request too slow), connections (max_connections), peer_connections (max_connections_per_peer)",
            m.refused.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accept() calls (e.g. EMFILE), each followed by a back-off",
            m.accept_errors.clone(),
        );
        registry.register(
            "connections",
            "Client connections open now",
            m.connections.clone(),
        );
        registry.register(
            "decision_threads",
            "Decision threads of each front end (serve.workers)",
            m.decision_threads.clone(),
        );
        registry.register(
            "decisions_busy",
            "Decision threads busy now",
            m.decisions_busy.clone(),
        );
        registry.register(
            "panics",
            "Decisions that panicked (answered as temporary failures)",
            m.panics.clone(),
        );
        registry.register(
            "ldap_idle_connections",
            "Warm service-bound LDAP connections idle now",
            m.ldap_idle.clone(),
        );
        registry.register(
            "ldap_max_idle_connections",
            "Warm LDAP connections kept at most (serve.ldap_connections)",
            m.ldap_max_idle.clone(),
        );
        registry.register(
            "ldap_bind_idle_connections",
            "Warm bind-only LDAP connections (user binds) idle now",
            m.ldap_bind_idle.clone(),
        );
        registry.register(
            "ldap_bind_max_idle_connections",
            "Warm bind-only LDAP connections kept at most (serve.ldap_bind_connections)",
            m.ldap_bind_max_idle.clone(),
        );
        registry.register(
            "db_connections",
            "Database connections open now, idle or in use",
            m.db_open.clone(),
        );
        registry.register(
            "db_max_connections",
            "Database connections open at most (serve.db_connections)",
            m.db_max.clone(),
        );
        registry.register(
            "db_waits",
            "Requests that had to wait for a database connection (since the last reload)",
            m.db_waits.clone(),
        );
        registry.register(
            "db_wait_seconds",
            "Time requests waited for a database connection, in all (since the last reload)",
            m.db_wait_seconds.clone(),
        );
        registry.register(
            "ldap_host_up",
            "1 when the directory host is not marked failed, 0 while it is held back",
            m.host_up.clone(),
        );
        Metrics { registry, ..m }
    }

    /// One decision made (`took`: `None` when it panicked).
    pub fn login(
        &self,
        front: Front,
        kind: RequestKind,
        service: Option<&str>,
        verdict: Verdict,
        took: Option<Duration>,
    ) {
        let labels = LoginLabels {
            frontend: front.label(),
            kind: if kind == RequestKind::Lookup {
                "lookup"
            } else {
                "auth"
            },
            service: service_label(service),
            result: verdict.word(),
        };
        self.logins.get_or_create(&labels).inc();
        if let Some(took) = took {
            self.latency
                .get_or_create(&FrontLabels {
                    frontend: front.label(),
                })
                .observe(took.as_secs_f64());
        }
    }

    pub fn queue_wait(&self, front: Front, waited: Duration) {
        self.queue_wait
            .get_or_create(&FrontLabels {
                frontend: front.label(),
            })
            .observe(waited.as_secs_f64());
    }

    pub fn refused(&self, front: Front, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels {
                frontend: front.label(),
                reason,
            })
            .inc();
    }

    pub fn accept_error(&self, front: Front) {
        self.accept_errors
            .get_or_create(&FrontLabels {
                frontend: front.label(),
            })
            .inc();
    }

    /// The text exposition, with the gauges set from `pools`.
    pub fn encode(&self, pools: &Pools) -> String {
        let set = |family: &Family<FrontLabels, Gauge>, v: &[(Front, usize)]| {
            for (f, n) in v {
                family
                    .get_or_create(&FrontLabels {
                        frontend: f.label(),
                    })
                    .set(*n as i64);
            }
        };
        set(&self.connections, &pools.connections);
        set(&self.decision_threads, &pools.decision_threads);
        set(&self.decisions_busy, &pools.decisions_busy);
        for (f, n) in &pools.panics {
            self.panics
                .get_or_create(&FrontLabels {
                    frontend: f.label(),
                })
                .set(*n as i64);
        }
        self.ldap_idle.set(pools.ldap_idle as i64);
        self.ldap_max_idle.set(pools.ldap_max_idle as i64);
        self.ldap_bind_idle.set(pools.ldap_bind_idle as i64);
        self.ldap_bind_max_idle.set(pools.ldap_bind_max_idle as i64);
        self.db_open.set(pools.db_open as i64);
        self.db_max.set(pools.db_max as i64);
        self.db_waits.set(pools.db_waits as i64);
        self.db_wait_seconds.set(pools.db_wait_seconds);
        self.host_up.clear();
        for (host, up) in &pools.hosts {
            self.host_up
                .get_or_create(&HostLabels { host: host.clone() })
                .set(i64::from(*up));
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_stay_a_small_set() {
        assert_eq!(service_label(Some("imap")), "imap");
        assert_eq!(service_label(Some("x-random-1234")), "other");
        assert_eq!(service_label(Some("")), "none");
        assert_eq!(service_label(None), "none");
    }

    #[test]
    fn text_format_counts() {
        let m = Metrics::new();
        m.login(
            Front::Http,
            RequestKind::Password,
            Some("imap"),
            Verdict::Accept,
            Some(Duration::from_millis(3)),
        );
        m.refused(Front::Saslauthd, "deadline");
        let text = m.encode(&Pools {
            hosts: vec![("ldap1:389".into(), true)],
            ..Pools::default()
        });
        assert!(
            text.contains("mailcow_ldap_auth_logins_total{frontend=\"http\",kind=\"auth\",service=\"imap\",result=\"accept\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mailcow_ldap_auth_login_duration_seconds_count{frontend=\"http\"} 1")
        );
        assert!(text.contains(
            "mailcow_ldap_auth_refused_total{frontend=\"saslauthd\",reason=\"deadline\"} 1"
        ));
        assert!(text.contains("mailcow_ldap_auth_ldap_host_up{host=\"ldap1:389\"} 1"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
