//! Errors from talking to Vault. Messages name paths and status codes, never secret values.
//!
//! Every failure is first reduced to a [`CallError`], which keeps only the HTTP status and
//! Vault's `errors` array: response bodies (which, for KV reads, hold secrets) and tokens never
//! reach a message, a log line or a `Debug` dump.

/// What went wrong talking to Vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Connection refused, timeout, TLS handshake failure, 5xx, sealed/standby (503).
    #[error("vault unreachable: {0}")]
    Unreachable(String),
    /// Login failed or the token is not valid (and re-login did not help).
    #[error("vault authentication failed: {0}")]
    Auth(String),
    /// 403 on a path.
    #[error("permission denied on {path}")]
    PermissionDenied { path: String },
    /// The path is not inside a KV version 2 mount.
    #[error("{path} is not inside a KV v2 mount: {reason}")]
    NotKvV2 { path: String, reason: String },
    /// Check-and-set failed: someone else wrote a version in the meantime.
    #[error("check-and-set conflict on {path}: expected version {expected}")]
    CasMismatch { path: String, expected: u64 },
    /// Any other error answer from Vault.
    #[error("vault answered {status} on {path}: {message}")]
    Api {
        path: String,
        status: u16,
        message: String,
    },
    /// The local setup is wrong (bad CA file, bad address).
    #[error("vault client setup: {0}")]
    Setup(String),
}

impl VaultError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            VaultError::Unreachable(_) | VaultError::Auth(_) => true,
            VaultError::Api { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// Turns a non-success answer to a raw request (see [`super::VaultSession::send`]) into an
    /// error, reading the body only for Vault's `errors` array.
    pub async fn from_response(path: &str, response: reqwest::Response) -> VaultError {
        let status = response.status().as_u16();
        // Read at most the limit: a hostile server may stream an error body without end (and
        // the snapshot requests run with a very long timeout).
        let errors = match crate::body::read_limited(response, crate::body::MAX_BODY).await {
            Ok(body) => errors_from_body(&body),
            Err(e @ crate::body::BodyError::TooLarge { .. }) => vec![e.to_string()],
            Err(crate::body::BodyError::Transport(_)) => Vec::new(),
        };
        CallError::Status {
            code: status,
            errors,
        }
        .into_vault_error(path)
    }

    /// Turns a failed bounded body read ([`crate::body`]) on `path` into an error: a body over
    /// the limit is an unexpected answer, a broken read is [`VaultError::Unreachable`].
    pub fn from_body(path: &str, err: crate::body::JsonBodyError) -> VaultError {
        use crate::body::{BodyError, JsonBodyError};
        match err {
            JsonBodyError::Body(BodyError::Transport(message)) => CallError::Transport(message),
            other => CallError::Unexpected(other.to_string()),
        }
        .into_vault_error(path)
    }

    /// Turns a transport error of a raw request into [`VaultError::Unreachable`].
    pub fn from_reqwest(path: &str, err: &reqwest::Error) -> VaultError {
        CallError::Transport(error_chain(err)).into_vault_error(path)
    }
}

/// Vault's message when check-and-set fails.
const CAS_MISMATCH: &str = "check-and-set parameter did not match";

/// Longest Vault error message kept (they are short; this only bounds odd ones).
const MAX_MESSAGE: usize = 300;

/// A failed call, already scrubbed: no response body, no token.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Vault answered with a non-success status; `errors` is its `errors` array.
    Status { code: u16, errors: Vec<String> },
    /// The request did not get an answer (connect, TLS, timeout, body read).
    Transport(String),
    /// A 2xx answer we could not understand.
    Unexpected(String),
    /// The token was refused and logging in again failed.
    Login(VaultError),
}

impl CallError {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A 404 with an empty `errors` array: "nothing there" (as opposed to "no such route").
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, CallError::Status { code: 404, errors } if errors.is_empty())
    }

    /// A 404 saying no mount handles the path (the mount was disabled or moved).
    pub(crate) fn is_no_route(&self) -> bool {
        matches!(self, CallError::Status { code: 404, errors }
            if errors.iter().any(|e| e.contains("no handler for route")))
    }

    pub(crate) fn is_cas_mismatch(&self) -> bool {
        matches!(self, CallError::Status { code: 400, errors }
            if errors.iter().any(|e| e.contains(CAS_MISMATCH)))
    }

    /// Maps the failure of a call on `path` to the public error.
    pub(crate) fn into_vault_error(self, path: &str) -> VaultError {
        match self {
            CallError::Status { code: 403, .. } => VaultError::PermissionDenied {
                path: path.to_string(),
            },
            CallError::Status { code, errors } if code >= 500 => {
                VaultError::Unreachable(format!("{path}: vault answered {code}{}", suffix(&errors)))
            }
            CallError::Status { code, errors } => VaultError::Api {
                path: path.to_string(),
                status: code,
                message: if errors.is_empty() {
                    "no error message".to_string()
                } else {
                    errors.join("; ")
                },
            },
            CallError::Transport(message) => VaultError::Unreachable(format!("{path}: {message}")),
            CallError::Unexpected(message) => VaultError::Api {
                path: path.to_string(),
                status: 200,
                message,
            },
            CallError::Login(err) => err,
        }
    }
}

fn suffix(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.join("; "))
    }
}

impl From<vaultrs::error::ClientError> for CallError {
    fn from(err: vaultrs::error::ClientError) -> Self {
        use vaultrs::error::ClientError as E;
        match err {
            E::APIError { code, errors } => CallError::Status {
                code,
                errors: errors.into_iter().map(bounded).collect(),
            },
            E::RestClientError { source } => CallError::from(source),
            // The Display of these names no content, but the values may hold bodies: never
            // format them with Debug.
            E::JsonParseError { .. } => {
                CallError::Unexpected("the answer did not have the expected fields".into())
            }
            E::ResponseEmptyError | E::ResponseDataEmptyError => {
                CallError::Unexpected("the answer had no data".into())
            }
            other => CallError::Unexpected(other.to_string()),
        }
    }
}

impl From<rustify::errors::ClientError> for CallError {
    fn from(err: rustify::errors::ClientError) -> Self {
        use rustify::errors::ClientError as E;
        match err {
            E::ServerResponseError { code, content } => CallError::Status {
                code,
                errors: content
                    .map(|body| errors_from_body(body.as_bytes()))
                    .unwrap_or_default(),
            },
            E::RequestError { source, .. } | E::ResponseError { source } => {
                CallError::Transport(format!("{source:#}"))
            }
            E::ReqwestBuildError { source } => CallError::Transport(error_chain(&source)),
            // These carry the response body: keep nothing of it.
            E::ResponseParseError { .. }
            | E::ResponseConversionError { .. }
            | E::DataParseError { .. } => {
                CallError::Unexpected("the answer could not be parsed".into())
            }
            other => CallError::Unexpected(other.to_string()),
        }
    }
}

/// Vault's `errors` array from an error body; nothing else of the body is kept.
pub(crate) fn errors_from_body(body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<String>,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.errors.into_iter().map(bounded).collect())
        .unwrap_or_default()
}

fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// `err: cause: cause…` — reqwest's own Display stops at the outermost layer.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hunter2-very-secret";

    fn kv_body() -> String {
        format!(r#"{{"data":{{"data":{{"password":"{SECRET}"}},"metadata":{{"version":1}}}}}}"#)
    }

    #[test]
    fn status_codes_map_to_variants() {
        let path = "secret/api-key/default";
        let status = |code, errors: &[&str]| CallError::Status {
            code,
            errors: errors.iter().map(|e| e.to_string()).collect(),
        };
        assert!(matches!(
            status(403, &["permission denied"]).into_vault_error(path),
            VaultError::PermissionDenied { path: p } if p == path
        ));
        assert!(matches!(
            status(503, &["Vault is sealed"]).into_vault_error(path),
            VaultError::Unreachable(m) if m.contains("503") && m.contains("sealed")
        ));
        assert!(matches!(
            status(500, &[]).into_vault_error(path),
            VaultError::Unreachable(_)
        ));
        let api = status(400, &["bad thing", "worse thing"]).into_vault_error(path);
        assert!(
            matches!(&api, VaultError::Api { status: 400, message, .. } if message == "bad thing; worse thing")
        );
        assert!(!api.is_retryable());
        assert!(status(429, &[]).into_vault_error(path).is_retryable());
        assert!(
            CallError::Transport("connection refused".into())
                .into_vault_error(path)
                .is_retryable()
        );
    }

    #[test]
    fn classifies_not_found_no_route_and_cas() {
        assert!(
            CallError::Status {
                code: 404,
                errors: vec![]
            }
            .is_not_found()
        );
        let no_route = CallError::Status {
            code: 404,
            errors: vec![r#"no handler for route "gone/data/x". route entry not found."#.into()],
        };
        assert!(!no_route.is_not_found());
        assert!(no_route.is_no_route());
        let cas = CallError::Status {
            code: 400,
            errors: vec!["check-and-set parameter did not match the current version".into()],
        };
        assert!(cas.is_cas_mismatch());
        assert!(
            !CallError::Status {
                code: 400,
                errors: vec!["other".into()]
            }
            .is_cas_mismatch()
        );
    }

    #[test]
    fn response_bodies_are_scrubbed() {
        // A 404 on a deleted version carries the whole body (no `errors` key): nothing kept.
        let err = CallError::from(rustify::errors::ClientError::ServerResponseError {
            code: 404,
            content: Some(kv_body()),
        });
        assert!(err.is_not_found());
        assert!(!format!("{err:?}").contains(SECRET));

        // A 2xx body that failed to parse: the content is dropped.
        let err = CallError::from(rustify::errors::ClientError::ResponseParseError {
            source: anyhow::anyhow!("bad json"),
            content: Some(kv_body()),
        });
        let shown = format!("{err:?}");
        let shown = format!("{shown} {}", err.into_vault_error("secret/x"));
        assert!(!shown.contains(SECRET), "{shown}");

        let err = CallError::from(vaultrs::error::ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError {
                code: 500,
                content: Some(format!(r#"{{"errors":["internal"],"data":"{SECRET}"}}"#)),
            },
        });
        let shown = format!("{err:?}");
        let shown = format!("{shown} {}", err.into_vault_error("secret/x"));
        assert!(
            shown.contains("internal") && !shown.contains(SECRET),
            "{shown}"
        );

        // Non-JSON bodies keep nothing.
        assert!(errors_from_body(SECRET.as_bytes()).is_empty());
    }

    #[test]
    fn long_messages_are_bounded() {
        let errors =
            errors_from_body(format!(r#"{{"errors":["{}"]}}"#, "é".repeat(400)).as_bytes());
        assert!(errors[0].len() <= MAX_MESSAGE + '…'.len_utf8());
    }
}
