//! The contract between the outbox and a way of reaching on-call: a [`Sink`] renders a
//! [`Notification`] in its own format and sends it once; the outbox owns retries, backoff,
//! timeouts around the whole send and the record of each attempt. Built from the config by
//! [`build_sinks`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::Notification;
use super::email::EmailSink;
use super::webhook::WebhookSink;
use crate::config::AlertsConfig;

/// Why a send failed. The text names the sink's host and the server's answer, never a secret
/// (passwords, routing keys, URLs read from `url_file`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The sink may take it later (connection refused, timeout, 5xx, 429, 4xx SMTP replies).
    #[error("{0}")]
    Retryable(String),
    /// The sink refuses it as it is (wrong password, bad routing key, 4xx): needs an operator,
    /// yet is still retried, slowly, so that fixing the config or the secret file is enough.
    #[error("{0}")]
    Permanent(String),
}

impl SendError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Retryable(_))
    }
}

/// A sink could not be built from its settings (unreadable CA file, bad address).
#[derive(Debug, thiserror::Error)]
#[error("alert sink {sink}: {message}")]
pub struct SinkError {
    pub sink: String,
    pub message: String,
}

/// One configured way of reaching on-call.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// The configured `name`.
    fn name(&self) -> &str;
    /// `email`, `generic`, `slack`, `pagerduty` or `alertmanager`, for logs and `alerts test`.
    fn kind(&self) -> &'static str;
    /// The longest one send may take; the outbox gives up on it after this.
    fn timeout(&self) -> Duration;
    /// Sends one notification.
    async fn send(&self, n: &Notification) -> Result<(), SendError>;
    /// Proves, sending no notification, that the sink can be reached (`check --connect`);
    /// says what it saw.
    async fn probe(&self) -> Result<String, SendError>;
    /// How often alerts that are still firing must be sent again for the receiver to keep them
    /// open (Alertmanager expires alerts that are not re-sent); `None` for most sinks.
    fn refresh_interval(&self) -> Option<Duration> {
        None
    }
    /// Sends every still-firing alert routed here again (see
    /// [`refresh_interval`](Sink::refresh_interval)).
    async fn refresh(&self, _firing: &[Notification]) -> Result<(), SendError> {
        Ok(())
    }
}

/// Builds every configured sink, email sinks first.
pub fn build_sinks(config: &AlertsConfig) -> Result<Vec<Arc<dyn Sink>>, SinkError> {
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    for c in &config.email {
        sinks.push(Arc::new(EmailSink::new(c.clone())?));
    }
    for c in &config.webhook {
        sinks.push(Arc::new(WebhookSink::new(c.clone())?));
    }
    Ok(sinks)
}

/// One line of an error and its sources, with repeats folded: library errors often say the same
/// thing at two levels.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
