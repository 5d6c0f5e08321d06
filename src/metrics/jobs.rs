//! The per-job metric families (`job_*`, `secret_age_seconds`) as one compact table, rendered
//! at scrape time. The prometheus client keeps a series object per label set per family (about
//! 6 KiB a job over these families, so 60 MiB at 10,000 jobs); this table keeps one small row
//! per job (about 0.5 KiB) and writes the same text exposition the client would: families by
//! name, series by label values, labels by name, values as Rust prints an `f64`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

/// The buckets of `job_duration_seconds`.
pub(super) const DURATION_BUCKETS: [f64; 13] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// Name, help and type of each family this table renders, in exposition (name) order.
const LAST_RUN: (&str, &str) = (
    "vault_steward_job_last_run_timestamp_seconds",
    "Unix time the job's last run started.",
);
const LAST_SUCCESS: (&str, &str) = (
    "vault_steward_job_last_success_timestamp_seconds",
    "Unix time of the job's last successful run.",
);
const NEXT_RUN: (&str, &str) = (
    "vault_steward_job_next_run_timestamp_seconds",
    "Unix time at which the job is next due.",
);
const RUNS: (&str, &str) = (
    "vault_steward_job_runs_total",
    "Runs of the job by outcome (success or failure).",
);
const DURATION: (&str, &str) = (
    "vault_steward_job_duration_seconds",
    "How long the job's runs took.",
);
const FAILURES: (&str, &str) = (
    "vault_steward_job_consecutive_failures",
    "Failed runs of the job since its last success.",
);
const SECRET_AGE: (&str, &str) = (
    "vault_steward_secret_age_seconds",
    "Age of the secret the job looks after (since its current version was written).",
);

/// A run-duration histogram: per-bucket (not cumulative) counts, sum and count.
#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// One `(job, kind)` label set's values; `None` = the series does not exist (yet).
#[derive(Debug, Default, Clone)]
struct Row {
    last_run: Option<f64>,
    last_success: Option<f64>,
    next_run: Option<f64>,
    /// `job_runs_total` for outcome `failure`, `success`.
    runs_failure: Option<u64>,
    runs_success: Option<u64>,
    consecutive_failures: Option<i64>,
    duration: Option<Box<Histogram>>,
}

/// Every job's series, keyed by the label values in exposition order.
#[derive(Debug, Default)]
pub(super) struct JobTable {
    /// job → its rows by kind (one, unless a job changed kind), sorted by kind.
    rows: BTreeMap<Box<str>, Vec<(&'static str, Row)>>,
    /// job → when its secret last changed (`secret_age_seconds{job}` is computed from it).
    secret_changed: BTreeMap<Box<str>, DateTime<Utc>>,
}

/// Which gauge of a job to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobGauge {
    LastRun,
    LastSuccess,
    NextRun,
}

impl JobTable {
    fn row(&mut self, job: &str, kind: &'static str) -> &mut Row {
        // The key is allocated only for a job seen for the first time.
        if !self.rows.contains_key(job) {
            self.rows.insert(Box::from(job), Vec::with_capacity(1));
        }
        let Some(kinds) = self.rows.get_mut(job) else {
            unreachable!("the job's entry was inserted above");
        };
        let i = match kinds.binary_search_by(|(k, _)| (*k).cmp(kind)) {
            Ok(i) => i,
            Err(i) => {
                kinds.insert(i, (kind, Row::default()));
                i
            }
        };
        &mut kinds[i].1
    }

    /// Every row in exposition order: by job, then kind.
    fn each(&self) -> impl Iterator<Item = (&str, &'static str, &Row)> {
        self.rows
            .iter()
            .flat_map(|(job, kinds)| kinds.iter().map(move |(kind, row)| (&**job, *kind, row)))
    }

    pub fn register(&mut self, job: &str, kind: &'static str) {
        let row = self.row(job, kind);
        row.runs_failure.get_or_insert(0);
        row.runs_success.get_or_insert(0);
        row.consecutive_failures = Some(0);
    }

    pub fn set_gauge(&mut self, gauge: JobGauge, job: &str, kind: &'static str, value: f64) {
        let row = self.row(job, kind);
        let slot = match gauge {
            JobGauge::LastRun => &mut row.last_run,
            JobGauge::LastSuccess => &mut row.last_success,
            JobGauge::NextRun => &mut row.next_run,
        };
        *slot = Some(value);
    }

    pub fn count_run(&mut self, job: &str, kind: &'static str, success: bool) {
        let row = self.row(job, kind);
        let slot = if success {
            &mut row.runs_success
        } else {
            &mut row.runs_failure
        };
        *slot = Some(slot.unwrap_or(0) + 1);
    }

    pub fn set_consecutive_failures(&mut self, job: &str, kind: &'static str, n: i64) {
        self.row(job, kind).consecutive_failures = Some(n);
    }

    pub fn observe_duration(&mut self, job: &str, kind: &'static str, seconds: f64) {
        let h = self.row(job, kind).duration.get_or_insert_default();
        // As the client does: the first bucket whose upper bound is >= the value.
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| seconds <= *b) {
            h.buckets[i] += 1;
        }
        h.sum += seconds;
        h.count += 1;
    }

    pub fn set_secret_changed(&mut self, job: &str, at: Option<DateTime<Utc>>) {
        match at {
            Some(at) => match self.secret_changed.get_mut(job) {
                Some(slot) => *slot = at,
                None => {
                    self.secret_changed.insert(Box::from(job), at);
                }
            },
            None => {
                self.secret_changed.remove(job);
            }
        }
    }

    /// The text exposition of every non-empty family, each as `(name, text)`, with
    /// `secret_age_seconds` as of `now`.
    pub fn render(&self, now: DateTime<Utc>) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let gauge = |pick: fn(&Row) -> Option<f64>, (name, help): (&'static str, &str)| {
            family(name, help, "gauge", |text| {
                for (job, kind, row) in self.each() {
                    if let Some(v) = pick(row) {
                        sample(text, name, "", &[("job", job), ("kind", kind)], v);
                    }
                }
            })
        };
        out.extend(gauge(|r| r.last_run, LAST_RUN));
        out.extend(gauge(|r| r.last_success, LAST_SUCCESS));
        out.extend(gauge(|r| r.next_run, NEXT_RUN));
        out.extend(gauge(
            |r| r.consecutive_failures.map(|n| n as f64),
            FAILURES,
        ));
        out.extend(family(RUNS.0, RUNS.1, "counter", |text| {
            for (job, kind, row) in self.each() {
                for (outcome, n) in [("failure", row.runs_failure), ("success", row.runs_success)] {
                    if let Some(n) = n {
                        let labels = [("job", job), ("kind", kind), ("outcome", outcome)];
                        sample(text, RUNS.0, "", &labels, n as f64);
                    }
                }
            }
        }));
        out.extend(family(DURATION.0, DURATION.1, "histogram", |text| {
            for (job, kind, row) in self.each() {
                let Some(h) = &row.duration else { continue };
                let labels = [("job", job), ("kind", kind)];
                let mut cumulative = 0;
                for (bound, n) in DURATION_BUCKETS.iter().zip(h.buckets) {
                    cumulative += n;
                    let le = bound.to_string();
                    let with_le = [labels[0], labels[1], ("le", le.as_str())];
                    sample(text, DURATION.0, "_bucket", &with_le, cumulative as f64);
                }
                let with_le = [labels[0], labels[1], ("le", "+Inf")];
                sample(text, DURATION.0, "_bucket", &with_le, h.count as f64);
                sample(text, DURATION.0, "_sum", &labels, h.sum);
                sample(text, DURATION.0, "_count", &labels, h.count as f64);
            }
        }));
        out.extend(family(SECRET_AGE.0, SECRET_AGE.1, "gauge", |text| {
            for (job, at) in &self.secret_changed {
                let age = (now - *at).num_milliseconds().max(0) as f64 / 1000.0;
                sample(text, SECRET_AGE.0, "", &[("job", job)], age);
            }
        }));
        out
    }
}

/// One family's text, or `None` when it has no series (the client leaves those out).
fn family(
    name: &'static str,
    help: &str,
    kind: &str,
    samples: impl FnOnce(&mut String),
) -> Option<(&'static str, String)> {
    let mut body = String::new();
    samples(&mut body);
    if body.is_empty() {
        return None;
    }
    Some((
        name,
        format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{body}"),
    ))
}

fn sample(text: &mut String, name: &str, suffix: &str, labels: &[(&str, &str)], value: f64) {
    text.push_str(name);
    text.push_str(suffix);
    let mut sep = '{';
    for (label, value) in labels {
        text.push(sep);
        text.push_str(label);
        text.push_str("=\"");
        escape_into(text, value);
        text.push('"');
        sep = ',';
    }
    if !labels.is_empty() {
        text.push('}');
    }
    let _ = writeln!(text, " {value}");
}

/// Label values escaped as the text format wants (`\`, newline, `"`).
fn escape_into(text: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '\n' => text.push_str("\\n"),
            '"' => text.push_str("\\\""),
            c => text.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{
        Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
        TextEncoder,
    };

    use super::*;

    /// The same families in the prometheus client, as the daemon had them before this table.
    struct Reference {
        registry: Registry,
        last_run: GaugeVec,
        last_success: GaugeVec,
        next_run: GaugeVec,
        runs: IntCounterVec,
        duration: HistogramVec,
        failures: IntGaugeVec,
        secret_age: GaugeVec,
    }

    impl Reference {
        fn new() -> Self {
            let opts = |(name, help): (&str, &str)| Opts::new(name, help);
            let labels = &["job", "kind"];
            let r = Reference {
                registry: Registry::new(),
                last_run: GaugeVec::new(opts(LAST_RUN), labels).unwrap(),
                last_success: GaugeVec::new(opts(LAST_SUCCESS), labels).unwrap(),
                next_run: GaugeVec::new(opts(NEXT_RUN), labels).unwrap(),
                runs: IntCounterVec::new(opts(RUNS), &["job", "kind", "outcome"]).unwrap(),
                duration: HistogramVec::new(
                    HistogramOpts::new(DURATION.0, DURATION.1).buckets(DURATION_BUCKETS.to_vec()),
                    labels,
                )
                .unwrap(),
                failures: IntGaugeVec::new(opts(FAILURES), labels).unwrap(),
                secret_age: GaugeVec::new(opts(SECRET_AGE), &["job"]).unwrap(),
            };
            r.registry.register(Box::new(r.last_run.clone())).unwrap();
            r.registry
                .register(Box::new(r.last_success.clone()))
                .unwrap();
            r.registry.register(Box::new(r.next_run.clone())).unwrap();
            r.registry.register(Box::new(r.runs.clone())).unwrap();
            r.registry.register(Box::new(r.duration.clone())).unwrap();
            r.registry.register(Box::new(r.failures.clone())).unwrap();
            r.registry.register(Box::new(r.secret_age.clone())).unwrap();
            r
        }

        fn text(&self) -> String {
            let mut buf = Vec::new();
            TextEncoder::new()
                .encode(&self.registry.gather(), &mut buf)
                .unwrap();
            String::from_utf8(buf).unwrap()
        }
    }

    fn table_text(t: &JobTable, now: DateTime<Utc>) -> String {
        let mut families = t.render(now);
        families.sort_by(|a, b| a.0.cmp(b.0));
        families.into_iter().map(|(_, text)| text).collect()
    }

    #[test]
    fn empty_table_renders_nothing() {
        assert_eq!(table_text(&JobTable::default(), Utc::now()), "");
        assert_eq!(Reference::new().text(), "");
    }

    /// Every update the engine makes, on both sides: the text must be byte for byte the same.
    #[test]
    fn renders_exactly_what_the_prometheus_client_renders() {
        let now = DateTime::from_timestamp(1_800_000_000, 250_000_000).unwrap();
        let (mut t, r) = (JobTable::default(), Reference::new());
        // Out of order, odd names (escaping), two kinds for one job, a job never registered.
        let jobs = [
            ("zeta", "api-key"),
            ("alpha", "reminder"),
            ("odd\"name\\with\nnewline", "api-key"),
            ("alpha", "api-key"),
            ("m-10", "postgres"),
            ("m-9", "postgres"),
        ];
        for (i, (job, kind)) in jobs.iter().enumerate() {
            if i != 4 {
                t.register(job, kind);
                r.runs.with_label_values(&[*job, kind, "success"]);
                r.runs.with_label_values(&[*job, kind, "failure"]);
                r.failures.with_label_values(&[*job, kind]).set(0);
            }
            let at = 1_700_000_000.0 + i as f64 * 1.001;
            t.set_gauge(JobGauge::NextRun, job, kind, at);
            r.next_run.with_label_values(&[*job, kind]).set(at);
            if i % 2 == 0 {
                t.set_gauge(JobGauge::LastRun, job, kind, at - 60.5);
                r.last_run.with_label_values(&[*job, kind]).set(at - 60.5);
                for d in [0.003, 0.05, 0.7 * i as f64, 12.5, 1000.0] {
                    t.observe_duration(job, kind, d);
                    r.duration.with_label_values(&[*job, kind]).observe(d);
                }
                t.count_run(job, kind, true);
                r.runs.with_label_values(&[*job, kind, "success"]).inc();
                t.set_gauge(JobGauge::LastSuccess, job, kind, at);
                r.last_success.with_label_values(&[*job, kind]).set(at);
            } else {
                t.count_run(job, kind, false);
                t.count_run(job, kind, false);
                r.runs.with_label_values(&[*job, kind, "failure"]).inc_by(2);
                t.set_consecutive_failures(job, kind, 2);
                r.failures.with_label_values(&[*job, kind]).set(2);
            }
            let changed = now - chrono::Duration::milliseconds(90_125 * i as i64);
            t.set_secret_changed(job, Some(changed));
            let age = (now - changed).num_milliseconds() as f64 / 1000.0;
            r.secret_age.with_label_values(&[*job]).set(age);
        }
        t.set_secret_changed("m-9", None);
        r.secret_age.remove_label_values(&["m-9"]).unwrap();

        let expected = r.text();
        assert!(
            expected.contains(
                "job_duration_seconds_bucket{job=\"zeta\",kind=\"api-key\",le=\"+Inf\"} 5"
            )
        );
        assert!(expected.contains("odd\\\"name\\\\with\\nnewline"));
        assert_eq!(table_text(&t, now), expected);
    }
}
