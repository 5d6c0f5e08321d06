//! `alerts test`: a test notification through every configured sink, straight (not through the
//! outbox, so it needs no state store and reports at once), one line per sink; exit 1 if any
//! failed.

use std::process::ExitCode;

use chrono::Utc;

use super::{EXIT_FAILURE, Failure};
use crate::alert::Notification;
use crate::alert::sink::{SendError, build_sinks};
use crate::cli::AlertsCommand;
use crate::config::Config;

pub(super) async fn alerts(cfg: Config, command: AlertsCommand) -> Result<ExitCode, Failure> {
    match command {
        AlertsCommand::Test => test(cfg).await,
    }
}

async fn test(cfg: Config) -> Result<ExitCode, Failure> {
    let sinks = build_sinks(&cfg.alerts).map_err(|e| Failure::Usage(e.to_string()))?;
    if sinks.is_empty() {
        return Err(Failure::Usage(
            "no alert sinks are configured ([[alerts.email]] or [[alerts.webhook]])".into(),
        ));
    }
    let n = Notification::test(Utc::now());
    // Every sink at once: a hanging one delays only the end of the report.
    let results = futures::future::join_all(sinks.iter().map(|sink| {
        let n = &n;
        async move {
            let r = tokio::time::timeout(sink.timeout(), sink.send(n))
                .await
                .unwrap_or_else(|_| {
                    Err(SendError::Retryable(format!(
                        "no answer within {}",
                        crate::config::Duration(sink.timeout())
                    )))
                });
            (sink, r)
        }
    }))
    .await;
    let mut failed = 0;
    for (sink, result) in results {
        match result {
            Ok(()) => println!("{} ({}): ok", sink.name(), sink.kind()),
            Err(e) => {
                failed += 1;
                println!("{} ({}): FAILED: {e}", sink.name(), sink.kind());
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}
