//! vault-steward keeps the secrets of a Vault / OpenBao deployment fresh and its data recoverable.
//!
//! Map of the crate:
//! - [`cli`] — the command line (SPEC §1); [`app`] wires the pieces together for each command
//!   and owns task spawning, shutdown and sd_notify.
//! - [`config`] — `steward.toml` and the job files: parsing with spans (`FILE:LINE:COL` errors)
//!   and pure validation.
//! - [`store`] — the state store: one [`store::Store`] trait, SQLite and PostgreSQL backends.
//!   It records runs, rotation state, snapshot records, the alert outbox and job locks — never a
//!   secret value.
//! - [`engine`] — ticks (tokio-cron-scheduler), due-ness from persisted state, and the runner
//!   (lock, retry with backoff, timeout, record, metrics).
//! - [`vault`] — the one shared Vault session: token/AppRole auth, renewal, KV v2.
//! - [`job`] — the trait every job kind implements; [`rotate`] holds the kinds.
//! - [`leader`] — several instances on one PostgreSQL store: the leader lease, terms, fencing.
//! - [`alert`] — incidents raised by the engine, the outbox that stores every notification
//!   before it is sent, and the sinks that deliver them (email, webhooks).
//! - [`backup`] — raft snapshots: stream, check, encrypt, ship (S3, local), prune, verify,
//!   restore.
//! - [`http`] — `/metrics`, `/healthz`, `/readyz`; [`metrics`] names every metric.
//! - [`telemetry`] — tracing setup.

pub mod alert;
pub mod app;
pub mod backup;
pub mod cli;
pub mod config;
pub mod engine;
pub mod failpoint;
pub mod http;
pub mod job;
pub mod leader;
pub mod metrics;
pub mod rotate;
#[cfg(test)]
mod sim;
pub mod store;
pub mod telemetry;
pub mod vault;
