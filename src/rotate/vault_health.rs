//! `kind = "vault-health"`: watches the Vault that vault-steward serves, on its `schedule`.
//!
//! Each run asks `sys/health` (unauthenticated: it works while the token is dead or Vault is
//! sealed), then `sys/seal-status`, and for a standby `sys/leader`, and reports what it saw as
//! alert signals on every run: `VaultUnreachable` (no answer, twice in a row a second apart, so a
//! single dropped connection pages nobody), `VaultSealed`, and `VaultUnhealthy` (not initialised,
//! or a standby that knows no active node). The run itself succeeds whenever it could look: a
//! sealed Vault is news for on-call, not a failure of this job to retry with backoff — so the
//! next look happens on schedule, and unsealing is noticed within one tick. The engine turns the
//! signals into incidents and the `vault_up` / `vault_sealed` metrics.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::alert;
use crate::config::VaultHealthConfig;
use crate::job::{
    AlertSignal, Cadence, Inspection, Job, JobContext, JobError, RunReport, RunRequest, Severity,
    Work,
};
use crate::vault::VaultSession;

/// Per request: a health endpoint that takes longer than this is not healthy.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before the second try when Vault did not answer.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Checks Vault's health.
pub struct VaultHealthCheck {
    job: String,
    config: VaultHealthConfig,
}

/// `GET sys/health` (any status code carries this body).
#[derive(Debug, Clone, Default, Deserialize)]
struct Health {
    #[serde(default)]
    initialized: bool,
    #[serde(default)]
    sealed: bool,
    #[serde(default)]
    standby: bool,
    #[serde(default)]
    performance_standby: bool,
    #[serde(default)]
    version: String,
    #[serde(default)]
    cluster_name: Option<String>,
}

/// `GET sys/seal-status`.
#[derive(Debug, Clone, Default, Deserialize)]
struct SealStatus {
    #[serde(default, rename = "type")]
    seal_type: String,
    #[serde(default)]
    sealed: bool,
    #[serde(default)]
    t: u32,
    #[serde(default)]
    n: u32,
    #[serde(default)]
    progress: u32,
}

/// `GET sys/leader`.
#[derive(Debug, Clone, Default, Deserialize)]
struct Leader {
    #[serde(default)]
    leader_address: String,
}

/// What one look found.
#[derive(Debug, Clone)]
enum Seen {
    Unreachable(String),
    Answered {
        http_status: u16,
        health: Health,
        seal: Option<SealStatus>,
        /// For a standby: the active node's address it knows (empty: none).
        leader: Option<String>,
    },
}

impl VaultHealthCheck {
    pub fn new(job: &str, config: VaultHealthConfig) -> Self {
        VaultHealthCheck {
            job: job.to_string(),
            config,
        }
    }

    async fn look(&self, vault: &VaultSession) -> Seen {
        let mut seen = self.look_once(vault).await;
        if matches!(seen, Seen::Unreachable(_)) {
            tokio::time::sleep(RETRY_PAUSE).await;
            seen = self.look_once(vault).await;
        }
        seen
    }

    async fn look_once(&self, vault: &VaultSession) -> Seen {
        let (http_status, health) = match get::<Health>(vault, "sys/health").await {
            Ok(x) => x,
            Err(e) => return Seen::Unreachable(e),
        };
        // Only the health answer decides reachability; the rest adds detail when it can.
        let seal = get::<SealStatus>(vault, "sys/seal-status")
            .await
            .ok()
            .map(|(_, s)| s);
        let leader = if health.standby && !health.sealed {
            get::<Leader>(vault, "sys/leader")
                .await
                .ok()
                .map(|(_, l)| l.leader_address)
        } else {
            None
        };
        Seen::Answered {
            http_status,
            health,
            seal,
            leader,
        }
    }

    fn signals(&self, vault: &VaultSession, seen: &Seen) -> (String, Vec<AlertSignal>) {
        let addr = vault.address();
        let job = &self.job;
        match seen {
            Seen::Unreachable(error) => (
                format!("Vault at {addr} does not answer: {error}"),
                vec![AlertSignal {
                    name: alert::VAULT_UNREACHABLE,
                    firing: true,
                    severity: Severity::Critical,
                    summary: format!("Vault at {addr} does not answer its health check: {error}"),
                    details: serde_json::json!({ "address": addr, "error": error, "job": job }),
                }],
            ),
            Seen::Answered {
                http_status,
                health,
                seal,
                leader,
            } => {
                let sealed = seal.as_ref().map(|s| s.sealed).unwrap_or(health.sealed);
                let mut details = serde_json::json!({
                    "address": addr,
                    "http_status": http_status,
                    "version": health.version,
                    "cluster_name": health.cluster_name,
                    "initialized": health.initialized,
                    "sealed": sealed,
                    "standby": health.standby,
                    "performance_standby": health.performance_standby,
                });
                if let Some(s) = seal {
                    details["seal_type"] = s.seal_type.clone().into();
                    details["unseal_progress"] =
                        format!("{}/{} of {}", s.progress, s.t, s.n).into();
                }
                if let Some(l) = leader {
                    details["leader_address"] = l.clone().into();
                }
                let mut signals = vec![AlertSignal {
                    name: alert::VAULT_UNREACHABLE,
                    firing: false,
                    severity: Severity::Critical,
                    summary: format!("Vault at {addr} answers again"),
                    details: details.clone(),
                }];
                let state;
                if !health.initialized {
                    state = "not initialised".to_string();
                    signals.push(unhealthy(
                        true,
                        format!("Vault at {addr} is not initialised"),
                        &details,
                    ));
                } else if sealed {
                    state = "sealed".to_string();
                    signals.push(AlertSignal {
                        name: alert::VAULT_SEALED,
                        firing: true,
                        severity: Severity::Critical,
                        summary: format!("Vault at {addr} is sealed"),
                        details: details.clone(),
                    });
                } else {
                    signals.push(AlertSignal {
                        name: alert::VAULT_SEALED,
                        firing: false,
                        severity: Severity::Critical,
                        summary: format!("Vault at {addr} is unsealed"),
                        details: details.clone(),
                    });
                    let leaderless = health.standby
                        && !health.performance_standby
                        && leader.as_deref().is_some_and(str::is_empty);
                    if leaderless {
                        state = "standby without an active node".to_string();
                        signals.push(unhealthy(
                            true,
                            format!("Vault at {addr} is a standby that knows no active node"),
                            &details,
                        ));
                    } else {
                        state = if health.standby {
                            "standby, unsealed".to_string()
                        } else {
                            "active, unsealed".to_string()
                        };
                        signals.push(unhealthy(
                            false,
                            format!("Vault at {addr} is healthy again"),
                            &details,
                        ));
                    }
                }
                (
                    format!("Vault at {addr}: {state} (version {})", health.version),
                    signals,
                )
            }
        }
    }
}

fn unhealthy(firing: bool, summary: String, details: &serde_json::Value) -> AlertSignal {
    AlertSignal {
        name: alert::VAULT_UNHEALTHY,
        firing,
        severity: Severity::Critical,
        summary,
        details: details.clone(),
    }
}

/// An unauthenticated GET whose body is JSON whatever the status (Vault's health endpoints
/// answer 429, 472, 473, 501 and 503 with a body by design). `Err` holds a scrubbed reason.
async fn get<T: for<'de> Deserialize<'de>>(
    vault: &VaultSession,
    path: &str,
) -> Result<(u16, T), String> {
    let url = format!("{}/v1/{path}", vault.address());
    let response = vault
        .http()
        .get(&url)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| crate::alert::sink::error_chain(&e.without_url()))?;
    let status = response.status().as_u16();
    let body = crate::body::read_limited(response, crate::body::MAX_BODY)
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let parsed = serde_json::from_slice(&body)
        .map_err(|_| format!("{path} answered {status} without a health document"))?;
    Ok((status, parsed))
}

#[async_trait]
impl Job for VaultHealthCheck {
    fn cadence(&self) -> Cadence {
        Cadence::Schedule(self.config.schedule.clone())
    }

    fn needs_token(&self) -> bool {
        false
    }

    async fn inspect(&self, ctx: &JobContext) -> Result<Inspection, JobError> {
        let seen = self.look_once(&ctx.vault).await;
        let (summary, _) = self.signals(&ctx.vault, &seen);
        match seen {
            Seen::Unreachable(_) => Err(JobError::Transient(summary)),
            Seen::Answered { .. } => Ok(Inspection {
                summary,
                ..Inspection::default()
            }),
        }
    }

    async fn run(&self, ctx: &JobContext, _req: RunRequest) -> Result<RunReport, JobError> {
        let seen = tokio::select! {
            s = self.look(&ctx.vault) => s,
            _ = ctx.cancel.cancelled() => return Err(JobError::Cancelled),
        };
        let (summary, alerts) = self.signals(&ctx.vault, &seen);
        Ok(RunReport {
            work: Work::Done,
            detail: summary.clone(),
            inspection: Inspection {
                summary,
                ..Inspection::default()
            },
            alerts,
        })
    }
}
