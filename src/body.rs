//! Bounded reads of HTTP answers from servers the daemon does not control (Vault, webhook
//! receivers). A hostile or broken server — a MITM'd Vault, a proxy that echoes, a receiver that
//! streams without end — must not make the daemon buffer gigabytes and abort on allocation
//! failure (which, with a core dump, would write secrets to disk). Every body that is read whole
//! goes through [`read_limited`], which reads chunk by chunk and gives up as soon as the limit is
//! passed (a `Content-Length` above it is refused before any byte is read); the rest of the body
//! is never read, and dropping the response closes the connection. Error snippets use
//! [`read_prefix`], which keeps only the first bytes. Streams that are large by design (the raft
//! snapshot) are not read through here.

use zeroize::Zeroizing;

/// The most any JSON answer or error body from Vault may hold. Vault's largest ordinary answers
/// (a LIST of thousands of accessors, a KV secret with many fields) stay far below it.
pub const MAX_BODY: usize = 1024 * 1024;

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the limit; the rest was not read.
    #[error("the answer is larger than {} KiB; not read further", .limit / 1024)]
    TooLarge { limit: usize },
    /// The connection failed while reading (already scrubbed of the URL).
    #[error("reading the answer: {0}")]
    Transport(String),
}

/// Reads the whole body of `response` if it holds at most `limit` bytes. The buffer is wiped
/// when dropped, since answers may hold secrets (KV reads, secret-ids).
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, BodyError> {
    let announced = response.content_length();
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    // Sized up front when the length is known, so growing does not leave unwiped copies.
    let mut out = Zeroizing::new(Vec::with_capacity(
        announced.map_or(0, |n| n as usize).min(limit),
    ));
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if out.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads and parses a JSON body of at most `limit` bytes.
pub async fn json_limited<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    limit: usize,
) -> Result<T, JsonBodyError> {
    let body = read_limited(response, limit).await?;
    serde_json::from_slice(&body).map_err(|_| JsonBodyError::NotJson)
}

/// Why a JSON body could not be had.
#[derive(Debug, thiserror::Error)]
pub enum JsonBodyError {
    #[error(transparent)]
    Body(#[from] BodyError),
    /// Never carries the body or serde's message (which may quote it).
    #[error("the answer is not the expected JSON")]
    NotJson,
}

/// The first `at_most` bytes of the body (for an error snippet); the rest is not read. Any read
/// error ends the prefix.
pub async fn read_prefix(mut response: reqwest::Response, at_most: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < at_most {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(at_most - out.len());
                out.extend_from_slice(&chunk[..take]);
            }
            _ => break,
        }
    }
    out
}

fn transport(e: reqwest::Error) -> BodyError {
    BodyError::Transport(crate::alert::sink::error_chain(&e.without_url()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A response whose body is an endless stream of 1 KiB chunks, counting those pulled.
    fn endless(pulled: Arc<AtomicUsize>) -> reqwest::Response {
        let stream = futures::stream::repeat_with(move || {
            pulled.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 1024]))
        });
        reqwest::Response::from(http_response(reqwest::Body::wrap_stream(stream)))
    }

    fn http_response(body: reqwest::Body) -> axum::http::Response<reqwest::Body> {
        axum::http::Response::new(body)
    }

    #[tokio::test]
    async fn an_endless_body_is_given_up_just_past_the_limit() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let err = read_limited(endless(pulled.clone()), 64 * 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 65536 }), "{err}");
        assert_eq!(
            err.to_string(),
            "the answer is larger than 64 KiB; not read further"
        );
        assert!(pulled.load(Ordering::SeqCst) <= 65, "{pulled:?}");
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let response = reqwest::Response::from(http_response(reqwest::Body::from(
            r#"{"data":{"keys":["a"]}}"#,
        )));
        let v: serde_json::Value = json_limited(response, 1024).await.unwrap();
        assert_eq!(v["data"]["keys"][0], "a");
        let response = reqwest::Response::from(http_response(reqwest::Body::from("not json")));
        assert!(matches!(
            json_limited::<serde_json::Value>(response, 1024).await,
            Err(JsonBodyError::NotJson)
        ));
    }

    #[tokio::test]
    async fn an_announced_length_over_the_limit_is_refused_unread() {
        let mut response = http_response(reqwest::Body::from(vec![b'x'; 2048]));
        response.headers_mut().insert(
            axum::http::header::CONTENT_LENGTH,
            axum::http::HeaderValue::from_static("2048"),
        );
        let err = read_limited(reqwest::Response::from(response), 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { .. }));
    }

    #[tokio::test]
    async fn a_prefix_reads_only_its_length() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let prefix = read_prefix(endless(pulled.clone()), 2500).await;
        assert_eq!(prefix.len(), 2500);
        assert_eq!(pulled.load(Ordering::SeqCst), 3);
    }
}
