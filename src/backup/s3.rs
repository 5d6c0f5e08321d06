//! The S3 destination (AWS or any S3-compatible store): `PREFIX/vault-….snap.age` and its
//! manifest, through aws-sdk-s3 with the standard AWS credential chain.
//!
//! Listing, reading manifests, pruning, cleaning up after dead runs; [`upload`] streams a
//! snapshot up. Every write is conditional (`If-None-Match: *`): a name another writer took is
//! never replaced.
//!
//! Checksums: the SDK's default CRC32 *trailers* are turned off (`WhenRequired`), since several
//! S3-compatible stores reject aws-chunked bodies. Instead every part (and every single-request
//! object) carries its CRC32 as a plain `x-amz-checksum-crc32` header, computed as the part fills,
//! and the upload declares CRC32 when it starts: S3 checks each part on arrival and refuses a
//! damaged one, and stores that do not know the header ignore it. End-to-end integrity is still
//! ours to check (SHA-256 in the manifest).

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ServerSideEncryption};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::manifest::{self, Manifest};
use super::{BackupError, S3, manifest_snapshot, parse_snapshot_name};
use crate::config::S3DestinationConfig;

mod upload;

pub use upload::{PART_BUFFERS, PartSender, S3Upload};

/// Concurrent manifest reads and deletions while listing or pruning.
pub const CONCURRENCY: usize = 8;

/// One object of ours found under the prefix.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    pub size: u64,
}

/// Our snapshots and manifests directly under the prefix.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub snapshots: Vec<Found>,
    pub manifests: Vec<Found>,
}

/// `[job.s3]` with a client.
#[derive(Clone)]
pub struct S3Destination {
    client: Client,
    config: S3DestinationConfig,
}

fn err(message: String) -> BackupError {
    BackupError::destination(S3, message)
}

/// A CRC32 as S3 writes it: base64 of the big-endian bytes.
fn crc32_header(crc: u32) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// Whether a conditional write failed because the key already exists (412).
fn taken<E>(e: &aws_sdk_s3::error::SdkError<E>) -> bool {
    e.raw_response().is_some_and(|r| r.status().as_u16() == 412)
}

fn already_there(location: &str) -> String {
    format!(
        "{location} already exists and was left alone: another job or deployment writes snapshots under this prefix; give each its own"
    )
}

/// An SDK error with its causes, each said once (no credentials: the SDK never puts them in
/// errors). Debug dumps are left out: they repeat the chain and bury the message.
fn sdk(what: &str, e: impl std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    format!("{what}: {}", parts.join(": "))
}

impl S3Destination {
    /// Builds the client: credentials and (unless configured) region from the standard AWS
    /// chain; rustls with ring; the configured endpoint and path style.
    pub async fn connect(config: &S3DestinationConfig) -> S3Destination {
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            // A part of up to 512 MiB on a slow link; the job's timeout bounds the whole run.
            .operation_attempt_timeout(Duration::from_secs(15 * 60))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts);
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .force_path_style(config.force_path_style);
        if shared.region().is_none() {
            // S3-compatible stores rarely care; AWS itself redirects to the right region.
            builder = builder.region(aws_config::Region::new("us-east-1"));
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        S3Destination {
            client: Client::from_conf(builder.build()),
            config: config.clone(),
        }
    }

    /// The object key of `name`.
    pub fn key(&self, name: &str) -> String {
        if self.config.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.config.prefix)
        }
    }

    /// `s3://BUCKET/KEY`, for messages and listings.
    pub fn location(&self, name: &str) -> String {
        format!("s3://{}/{}", self.config.bucket, self.key(name))
    }

    fn list_prefix(&self) -> String {
        if self.config.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.config.prefix)
        }
    }

    /// Our snapshots and manifests directly under the prefix, through every page.
    pub async fn list(&self) -> Result<Listing, BackupError> {
        let prefix = self.list_prefix();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut out = Listing::default();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| err(sdk(&format!("listing {}", self.location("")), e)))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let Some(name) = key.strip_prefix(&prefix) else {
                    continue;
                };
                let found = Found {
                    name: name.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                };
                if parse_snapshot_name(name).is_some() {
                    out.snapshots.push(found);
                } else if manifest_snapshot(name).is_some() {
                    out.manifests.push(found);
                }
            }
        }
        Ok(out)
    }

    /// Aborts the multipart uploads of our snapshots (named like ours, directly under the
    /// prefix) whose name says they started before `cutoff`. A run that died (`kill -9`, a power
    /// cut) leaves its upload open, and S3 keeps billing the parts until this or a lifecycle rule
    /// removes them. Returns how many were aborted.
    pub async fn abort_abandoned(&self, cutoff: DateTime<Utc>) -> Result<usize, BackupError> {
        let prefix = self.list_prefix();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        let mut stale = Vec::new();
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.config.bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| {
                    err(sdk(
                        &format!("listing open uploads under {}", self.location("")),
                        e,
                    ))
                })?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let started = key.strip_prefix(&prefix).and_then(parse_snapshot_name);
                if started.is_some_and(|t| t < cutoff) {
                    stale.push((key.to_string(), id.to_string()));
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        for (key, id) in &stale {
            let object = format!("s3://{}/{key}", self.config.bucket);
            self.abort_upload(key, id)
                .await
                .map_err(|e| err(format!("aborting the abandoned upload of {object}: {e}")))?;
            tracing::info!(object = %object, "aborted the multipart upload of a run that died");
        }
        Ok(stale.len())
    }

    /// Aborts multipart upload `id` of object `key` (a full key, prefix included).
    async fn abort_upload(&self, key: &str, id: &str) -> Result<(), String> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk("abort", e))
    }

    /// Proves the bucket can be listed (for `check --connect`).
    pub async fn probe(&self) -> Result<(), BackupError> {
        self.client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(self.list_prefix())
            .max_keys(1)
            .send()
            .await
            .map(drop)
            .map_err(|e| err(sdk(&format!("listing {}", self.location("")), e)))
    }

    /// Reads a manifest; `Ok(None)` if it is missing or not a manifest.
    pub async fn read_manifest(&self, name: &str) -> Result<Option<Manifest>, BackupError> {
        let got = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.key(name))
            .send()
            .await;
        let mut body = match got {
            Ok(o) => {
                if o.content_length().unwrap_or(0) > manifest::MAX_SIZE as i64 {
                    return Ok(None);
                }
                o.body
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(err(sdk(&format!("reading {}", self.location(name)), e))),
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| err(sdk(&format!("reading {}", self.location(name)), e)))?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() > manifest::MAX_SIZE {
                return Ok(None);
            }
        }
        Ok(Manifest::parse(&bytes))
    }

    /// Streams an object.
    pub async fn get(&self, name: &str) -> Result<ByteStream, BackupError> {
        self.client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.key(name))
            .send()
            .await
            .map(|o| o.body)
            .map_err(|e| err(sdk(&format!("reading {}", self.location(name)), e)))
    }

    /// Deletes one object (one request per key: some S3-compatible stores reject DeleteObjects
    /// without Content-MD5).
    pub async fn delete(&self, name: &str) -> Result<(), BackupError> {
        self.client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(self.key(name))
            .send()
            .await
            .map(drop)
            .map_err(|e| err(sdk(&format!("deleting {}", self.location(name)), e)))
    }

    async fn put(&self, name: &str, body: Bytes, content_type: &str) -> Result<(), String> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(self.key(name))
            .content_type(content_type)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .checksum_crc32(crc32_header(crc32fast::hash(&body)))
            .body(ByteStream::from(body));
        if let Some(sse) = &self.config.sse {
            req = req.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
        }
        // Never over another object: a name already taken means another writer uses this prefix.
        req.if_none_match("*").send().await.map(drop).map_err(|e| {
            if taken(&e) {
                already_there(&self.location(name))
            } else {
                sdk(&format!("writing {}", self.location(name)), e)
            }
        })
    }
}
