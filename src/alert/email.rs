//! `[[alerts.email]]`: notifications as plain-text mail through lettre — plain SMTP (for a relay
//! on loopback), STARTTLS (`smtp://…?tls=required`), implicit TLS (`smtps://`), AUTH with a
//! password read from its file or env at each send (so fixing a wrong password needs no restart),
//! and an optional private CA.
//!
//! Each incident's mails form one thread: the firing mail's Message-ID names the incident, the
//! repeats and the resolved mail refer to it.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use super::Notification;
use super::message::hostname;
use super::sink::{SendError, Sink, SinkError, error_chain};
use crate::config::{EmailSinkConfig, SmtpSecurity};
use crate::store::DeliveryKind;

/// Sends notifications by mail.
pub struct EmailSink {
    config: EmailSinkConfig,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// `None` for plain SMTP.
    tls: Option<TlsParameters>,
}

impl EmailSink {
    /// Parses the addresses and loads the CA file, if any. Nothing is connected yet.
    pub fn new(config: EmailSinkConfig) -> Result<Self, SinkError> {
        let err = |message: String| SinkError {
            sink: config.name.clone(),
            message,
        };
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| err(format!("`from`: {e}")))?;
        let to = config
            .to
            .iter()
            .map(|a| a.parse().map_err(|e| err(format!("`to` {a}: {e}"))))
            .collect::<Result<Vec<Mailbox>, _>>()?;
        let tls = match config.smtp.security {
            SmtpSecurity::Plain => None,
            _ => {
                let mut b = TlsParameters::builder(config.smtp.host.clone());
                if let Some(path) = &config.ca_cert {
                    let pem = std::fs::read(path)
                        .map_err(|e| err(format!("ca_cert {}: {e}", path.display())))?;
                    let cert = Certificate::from_pem(&pem)
                        .map_err(|e| err(format!("ca_cert {}: {e}", path.display())))?;
                    // Like `ca_cert` for Vault: this CA, not the system's.
                    b = b
                        .certificate_store(CertificateStore::None)
                        .add_root_certificate(cert);
                }
                Some(b.build().map_err(|e| err(format!("TLS setup: {e}")))?)
            }
        };
        Ok(EmailSink {
            config,
            from,
            to,
            tls,
        })
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
        let smtp = &self.config.smtp;
        let tls = match (smtp.security, &self.tls) {
            (SmtpSecurity::Plain, _) | (_, None) => Tls::None,
            (SmtpSecurity::Opportunistic, Some(p)) => Tls::Opportunistic(p.clone()),
            (SmtpSecurity::StartTls, Some(p)) => Tls::Required(p.clone()),
            (SmtpSecurity::Implicit, Some(p)) => Tls::Wrapper(p.clone()),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port)
            .tls(tls)
            .timeout(Some(self.config.timeout.as_std()));
        if let (Some(user), Some(source)) = (&self.config.username, &self.config.password) {
            let password = source.read().map_err(|e| {
                SendError::Permanent(format!("SMTP password for user `{user}`: {e}"))
            })?;
            // lettre keeps its own copy for the life of this transport (one send).
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(builder.build())
    }

    fn message(&self, n: &Notification) -> Result<Message, SendError> {
        let domain = format!("vault-steward.{}", hostname());
        let incident = format!(
            "<incident.{}.{}@{domain}>",
            n.fingerprint,
            n.started_at.timestamp_millis()
        );
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(n.subject())
            .header(ContentType::TEXT_PLAIN)
            .date_now()
            .user_agent(concat!("vault-steward/", env!("CARGO_PKG_VERSION")).to_string());
        for to in &self.to {
            b = b.to(to.clone());
        }
        b = match (n.test, n.kind, n.delivery_id) {
            (true, _, _) => b.message_id(None),
            (false, DeliveryKind::Firing, _) => b.message_id(Some(incident)),
            (false, kind, id) => b
                .message_id(Some(format!(
                    "<{}.{}.{}@{domain}>",
                    kind.as_str(),
                    id.unwrap_or_default(),
                    n.fingerprint
                )))
                .in_reply_to(incident.clone())
                .references(incident),
        };
        b.body(n.body())
            .map_err(|e| SendError::Permanent(format!("building the mail: {e}")))
    }

    fn describe(&self, e: &lettre::transport::smtp::Error) -> SendError {
        let smtp = &self.config.smtp;
        let code = e.status().map(|c| c.to_string());
        let login_refused = matches!(code.as_deref(), Some("535" | "534" | "530" | "538"));
        let text = match (&self.config.username, login_refused) {
            (Some(user), true) => format!(
                "SMTP {}:{} refused the login of user `{user}` (wrong username or password?): {}",
                smtp.host,
                smtp.port,
                error_chain(e)
            ),
            _ => format!("SMTP {}:{}: {}", smtp.host, smtp.port, error_chain(e)),
        };
        if e.is_permanent() || e.is_tls() {
            SendError::Permanent(text)
        } else {
            SendError::Retryable(text)
        }
    }
}

#[async_trait]
impl Sink for EmailSink {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn kind(&self) -> &'static str {
        "email"
    }

    fn timeout(&self) -> Duration {
        // Connect, TLS, EHLO, AUTH, MAIL, RCPT, DATA: a few round trips, each within `timeout`.
        self.config.timeout.as_std() * 3
    }

    async fn probe(&self) -> Result<String, SendError> {
        let smtp = &self.config.smtp;
        // Connects, greets, upgrades to TLS and logs in as a send would, then says NOOP.
        match self.transport()?.test_connection().await {
            Ok(true) => Ok(format!(
                "SMTP {}:{} ({:?}{}) accepts a session",
                smtp.host,
                smtp.port,
                smtp.security,
                match &self.config.username {
                    Some(u) => format!(", logged in as {u}"),
                    None => String::new(),
                }
            )),
            Ok(false) => Err(SendError::Retryable(format!(
                "SMTP {}:{}: the session did not answer NOOP",
                smtp.host, smtp.port
            ))),
            Err(e) => Err(self.describe(&e)),
        }
    }

    async fn send(&self, n: &Notification) -> Result<(), SendError> {
        let message = self.message(n)?;
        let transport = self.transport()?;
        transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| self.describe(&e))
    }
}
