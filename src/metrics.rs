//! Every metric vault-steward exposes (SPEC §4, prefix `vault_steward_`), in one place.
//!
//! The engine updates these from job outcomes; components never touch them. Values that change
//! with time alone (secret age) are computed when `/metrics` is scraped, from the change time the
//! engine last saw, so that they are exact without a timer.
//!
//! The per-job families live in a compact table ([`jobs`]) rendered at scrape time rather than
//! in the prometheus client's registry, so that 10,000 jobs cost a few MiB, not 60.

mod jobs;

use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use prometheus::{Encoder, Gauge, GaugeVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub use jobs::JobGauge;
use jobs::JobTable;

const NS: &str = "vault_steward";

/// The daemon's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// `job_last_success_timestamp_seconds`, `job_last_run_timestamp_seconds`,
    /// `job_next_run_timestamp_seconds`, `job_runs_total`, `job_duration_seconds`,
    /// `job_consecutive_failures` (all `{job,kind}`) and `secret_age_seconds{job}`.
    jobs: Mutex<JobTable>,
    /// Size of the newest published snapshot (its encrypted object), by job.
    pub snapshot_size: GaugeVec,
    /// Snapshots kept in each destination, by job.
    pub snapshots_retained: GaugeVec,
    pub build_info: GaugeVec,
    /// 1 when the session holds a valid Vault token.
    pub vault_authenticated: Gauge,
    /// Notifications sent by sink and outcome (`success` or `failure` per attempt).
    pub alerts_sent: IntCounterVec,
    /// Notifications in the outbox not yet sent.
    pub alerts_queued: IntGauge,
    /// 1 while this instance is the one that acts (always, on SQLite), 0 on a standby.
    pub leader: IntGauge,
    /// 1 when Vault answered its health check (registered at the first check).
    vault_up: Gauge,
    /// 1 when Vault answered that it is sealed (registered at the first check that knew).
    vault_sealed: Gauge,
    /// Which of `vault_up` / `vault_sealed` are registered yet.
    vault_health_registered: Mutex<(bool, bool)>,
}

/// Building the metric set failed (a programming error: duplicate or invalid names).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NS)
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let snapshot_size = GaugeVec::new(
            opts(
                "snapshot_size_bytes",
                "Size of the job's newest published snapshot (encrypted), in bytes.",
            ),
            &["job"],
        )?;
        let snapshots_retained = GaugeVec::new(
            opts(
                "snapshots_retained",
                "Snapshots of the job kept in each destination.",
            ),
            &["job", "destination"],
        )?;
        let build_info = GaugeVec::new(
            opts("build_info", "Always 1; labelled with the running version."),
            &["version"],
        )?;
        let vault_authenticated = Gauge::with_opts(opts(
            "vault_authenticated",
            "1 when vault-steward holds a valid Vault token, else 0.",
        ))?;
        registry.register(Box::new(snapshot_size.clone()))?;
        registry.register(Box::new(snapshots_retained.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        let alerts_sent = IntCounterVec::new(
            opts(
                "alerts_sent_total",
                "Attempts to send a notification, by sink and outcome (success or failure).",
            ),
            &["sink", "outcome"],
        )?;
        let alerts_queued = IntGauge::with_opts(opts(
            "alerts_queued",
            "Notifications stored in the outbox and not yet sent.",
        ))?;
        let vault_up = Gauge::with_opts(opts(
            "vault_up",
            "1 when Vault answered the last health check (vault-health job), else 0.",
        ))?;
        let vault_sealed = Gauge::with_opts(opts(
            "vault_sealed",
            "1 when Vault reported itself sealed at the last health check, else 0.",
        ))?;
        registry.register(Box::new(vault_authenticated.clone()))?;
        registry.register(Box::new(alerts_sent.clone()))?;
        registry.register(Box::new(alerts_queued.clone()))?;
        let leader = IntGauge::with_opts(opts(
            "leader",
            "1 while this instance holds the leader lease and acts, 0 while it stands by.",
        ))?;
        registry.register(Box::new(leader.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        Ok(Metrics {
            registry,
            snapshot_size,
            snapshots_retained,
            build_info,
            vault_authenticated,
            alerts_sent,
            alerts_queued,
            leader,
            vault_up,
            vault_sealed,
            vault_health_registered: Mutex::new((false, false)),
            jobs: Mutex::new(JobTable::default()),
        })
    }

    /// Makes a sink's series exist from the start (both outcomes at 0).
    pub fn register_sink(&self, sink: &str) {
        for outcome in ["success", "failure"] {
            self.alerts_sent.with_label_values(&[sink, outcome]);
        }
    }

    /// Records the outcome of a health check: whether Vault answered, and, when it did,
    /// whether it is sealed (`None` when unknown). The two gauges appear at the first check that
    /// sets them, so that a daemon without a `vault-health` job does not claim Vault is down.
    pub fn set_vault_health(&self, up: bool, sealed: Option<bool>) {
        let mut registered = self
            .vault_health_registered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.vault_up.set(if up { 1.0 } else { 0.0 });
        if !registered.0 {
            registered.0 = self
                .registry
                .register(Box::new(self.vault_up.clone()))
                .is_ok();
        }
        if let Some(sealed) = sealed {
            self.vault_sealed.set(if sealed { 1.0 } else { 0.0 });
            if !registered.1 {
                registered.1 = self
                    .registry
                    .register(Box::new(self.vault_sealed.clone()))
                    .is_ok();
            }
        }
    }

    fn jobs(&self) -> MutexGuard<'_, JobTable> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes a job's series exist from the start (both outcomes at 0, no failures).
    pub fn register_job(&self, job: &str, kind: &'static str) {
        self.jobs().register(job, kind);
    }

    /// Sets one of a job's timestamp gauges (Unix seconds).
    pub fn set_job_gauge(&self, gauge: JobGauge, job: &str, kind: &'static str, value: f64) {
        self.jobs().set_gauge(gauge, job, kind, value);
    }

    /// Counts a finished run in `job_runs_total`.
    pub fn count_job_run(&self, job: &str, kind: &'static str, success: bool) {
        self.jobs().count_run(job, kind, success);
    }

    /// Records how long a run took in `job_duration_seconds`.
    pub fn observe_job_duration(&self, job: &str, kind: &'static str, seconds: f64) {
        self.jobs().observe_duration(job, kind, seconds);
    }

    /// Sets `job_consecutive_failures`.
    pub fn set_job_consecutive_failures(&self, job: &str, kind: &'static str, n: u32) {
        self.jobs()
            .set_consecutive_failures(job, kind, i64::from(n));
    }

    /// Records when a job's secret last changed; `secret_age_seconds` follows from it.
    pub fn set_secret_changed(&self, job: &str, at: Option<DateTime<Utc>>) {
        self.jobs().set_secret_changed(job, at);
    }

    /// Sets a snapshot job's gauges from its snapshot records: the newest one's size, and the
    /// count per destination (every configured destination appears, at 0 when empty).
    pub fn set_snapshots<'a>(
        &self,
        job: &str,
        destinations: impl IntoIterator<Item = &'a str>,
        records: &[crate::store::SnapshotRecord],
    ) {
        for dest in destinations {
            let n = records.iter().filter(|r| r.destination == dest).count();
            self.snapshots_retained
                .with_label_values(&[job, dest])
                .set(n as f64);
        }
        if let Some(newest) = records.iter().max_by_key(|r| r.taken_at) {
            self.snapshot_size
                .with_label_values(&[job])
                .set(newest.size_bytes as f64);
        }
    }

    /// The text exposition, with time-derived values brought up to `now`: the registry's
    /// families and the job table's, merged in name order as the registry would.
    pub fn render(&self, now: DateTime<Utc>) -> String {
        let mut families: Vec<(String, String)> = (self.jobs().render(now).into_iter())
            .map(|(name, text)| (name.to_string(), text))
            .collect();
        let encoder = TextEncoder::new();
        for family in self.registry.gather() {
            let mut buf = Vec::new();
            // Encoding into a Vec cannot fail for well-formed metric families.
            if encoder
                .encode(std::slice::from_ref(&family), &mut buf)
                .is_err()
            {
                continue;
            }
            let name = family.name().to_string();
            families.push((name, String::from_utf8(buf).unwrap_or_default()));
        }
        families.sort_by(|a, b| a.0.cmp(&b.0));
        let mut text = String::with_capacity(families.iter().map(|f| f.1.len()).sum());
        for (_, body) in &families {
            text.push_str(body);
        }
        text
    }
}

/// Seconds since the Unix epoch, as Prometheus timestamps are written.
pub fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_outcomes_exist_from_the_start() {
        let m = Metrics::new().unwrap();
        m.register_job("k1", "api-key");
        let text = m.render(Utc::now());
        assert!(text.contains(
            r#"vault_steward_job_runs_total{job="k1",kind="api-key",outcome="success"} 0"#
        ));
        assert!(text.contains(
            r#"vault_steward_job_runs_total{job="k1",kind="api-key",outcome="failure"} 0"#
        ));
        assert!(text.contains(r#"vault_steward_build_info{version=""#));
    }

    #[test]
    fn alert_and_vault_health_series() {
        let m = Metrics::new().unwrap();
        m.register_sink("mail");
        let text = m.render(Utc::now());
        assert!(
            text.contains(r#"vault_steward_alerts_sent_total{outcome="failure",sink="mail"} 0"#)
        );
        assert!(
            text.contains(r#"vault_steward_alerts_sent_total{outcome="success",sink="mail"} 0"#)
        );
        assert!(text.contains("vault_steward_alerts_queued 0"));
        assert!(
            !text.contains("vault_steward_vault_up"),
            "not before a check"
        );
        m.set_vault_health(false, None);
        let text = m.render(Utc::now());
        assert!(text.contains("vault_steward_vault_up 0"), "{text}");
        assert!(!text.contains("vault_steward_vault_sealed"));
        m.set_vault_health(true, Some(true));
        m.set_vault_health(true, Some(true));
        let text = m.render(Utc::now());
        assert!(text.contains("vault_steward_vault_up 1"), "{text}");
        assert!(text.contains("vault_steward_vault_sealed 1"), "{text}");
    }

    #[test]
    fn snapshot_gauges_follow_the_records() {
        let m = Metrics::new().unwrap();
        let rec = |dest: &str, secs: i64, size: i64| crate::store::SnapshotRecord {
            job: "snap".into(),
            destination: dest.into(),
            key: format!("vault-{secs}.snap.age"),
            taken_at: DateTime::from_timestamp(secs, 0).unwrap(),
            size_bytes: size,
            sha256: String::new(),
            raft_index: None,
            raft_term: None,
        };
        m.set_snapshots(
            "snap",
            ["s3", "local"],
            &[
                rec("s3", 100, 10),
                rec("s3", 200, 20),
                rec("local", 300, 30),
            ],
        );
        let text = m.render(Utc::now());
        assert!(text.contains(r#"vault_steward_snapshot_size_bytes{job="snap"} 30"#));
        assert!(
            text.contains(r#"vault_steward_snapshots_retained{destination="s3",job="snap"} 2"#)
        );
        assert!(
            text.contains(r#"vault_steward_snapshots_retained{destination="local",job="snap"} 1"#)
        );
        m.set_snapshots("snap", ["s3", "local"], &[]);
        let text = m.render(Utc::now());
        assert!(
            text.contains(r#"vault_steward_snapshots_retained{destination="s3",job="snap"} 0"#)
        );
    }

    #[test]
    fn secret_age_is_computed_at_render_time() {
        let m = Metrics::new().unwrap();
        let now = Utc::now();
        m.set_secret_changed("k1", Some(now - chrono::Duration::seconds(90)));
        let text = m.render(now);
        assert!(
            text.contains(r#"vault_steward_secret_age_seconds{job="k1"} 90"#),
            "{text}"
        );
        m.set_secret_changed("k1", None);
        assert!(!m.render(now).contains("secret_age_seconds{"));
    }
}
