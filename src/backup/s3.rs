//! The S3 destination (AWS or any S3-compatible store): `PREFIX/vault-….snap.age` and its
//! manifest, through aws-sdk-s3 with the standard AWS credential chain.
//!
//! A snapshot of unknown length goes up as a multipart upload, three parts at a time; at most
//! four parts exist in memory (one filling, three uploading), which bounds the memory a snapshot
//! takes whatever its size.
//! The first part is held back until a second one exists, so a small snapshot becomes one plain
//! `PutObject` at the end. Nothing is visible in the bucket until [`S3Upload::publish`]: it writes
//! the manifest, then completes the upload. Every other way out — an error, [`S3Upload::abort`],
//! or dropping the upload (the run timed out or was cancelled) — aborts the multipart upload.
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
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::manifest::{self, Manifest};
use super::{BackupError, S3, manifest_name, manifest_snapshot, parse_snapshot_name};
use crate::config::S3DestinationConfig;

/// Concurrent manifest reads and deletions while listing or pruning.
pub const CONCURRENCY: usize = 8;

/// Parts uploading at once. S3 (and S3-compatible stores) take parts in parallel far faster
/// than one after the other.
const UPLOADS_IN_FLIGHT: usize = 3;
/// Part buffers per upload: one filling while the others upload. The memory a snapshot takes is
/// this many parts.
pub const PART_BUFFERS: usize = UPLOADS_IN_FLIGHT + 1;

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
            self.client
                .abort_multipart_upload()
                .bucket(&self.config.bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await
                .map_err(|e| {
                    err(sdk(
                        &format!(
                            "aborting the abandoned upload of s3://{}/{key}",
                            self.config.bucket
                        ),
                        e,
                    ))
                })?;
            tracing::info!(object = %format!("s3://{}/{key}", self.config.bucket), "aborted the multipart upload of a run that died");
        }
        Ok(stale.len())
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

    /// Starts the upload of snapshot `name`: the [`PartSender`] takes ciphertext (on a blocking
    /// thread), the [`S3Upload`] decides its fate.
    pub fn start_upload(&self, name: &str) -> (PartSender, S3Upload) {
        let (tx, rx) = mpsc::channel(1);
        let (free_tx, free_rx) = mpsc::channel(PART_BUFFERS);
        let (decide_tx, decide_rx) = oneshot::channel();
        let task = UploadTask {
            dest: self.clone(),
            name: name.to_string(),
            upload_id: None,
            parts: Vec::new(),
            next_part: 0,
            free: free_tx,
        };
        let handle = tokio::spawn(task.run(rx, decide_rx));
        (
            PartSender {
                tx,
                free: free_rx,
                allocated: 0,
                buf: None,
                crc: crc32fast::Hasher::new(),
                part_size: self.config.part_size,
                runtime: tokio::runtime::Handle::current(),
            },
            S3Upload {
                decide: decide_tx,
                handle,
            },
        )
    }
}

/// A full (or the last) part, with its CRC32 (S3 checks it on arrival).
struct Part {
    bytes: Bytes,
    crc32: u32,
}

/// A CRC32 as S3 writes it: base64 of the big-endian bytes.
fn crc32_header(crc: u32) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// The writing end of an upload, for the blocking encryption thread. An upload has
/// [`PART_BUFFERS`] part buffers, allocated once and passed back and forth (the uploader returns
/// each after its part is up), so memory stays at that many parts whatever the snapshot's size
/// and the allocator never sees a churn of large blocks.
pub struct PartSender {
    tx: mpsc::Sender<Part>,
    free: mpsc::Receiver<Vec<u8>>,
    allocated: usize,
    buf: Option<Vec<u8>>,
    /// CRC32 of `buf`, computed as it fills (while the bytes are still in cache).
    crc: crc32fast::Hasher,
    part_size: usize,
    runtime: tokio::runtime::Handle,
}

/// The upload ended (it failed; its task reports why).
#[derive(Debug)]
pub struct UploadGone;

impl PartSender {
    /// Appends ciphertext, handing over each full part. Blocks while every buffer is in use.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), UploadGone> {
        while !data.is_empty() {
            let buf = match &mut self.buf {
                Some(b) => b,
                None => {
                    let b = self.next_buffer()?;
                    self.buf.insert(b)
                }
            };
            let room = self.part_size - buf.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            buf.extend_from_slice(now);
            self.crc.update(now);
            data = rest;
            if buf.len() == self.part_size {
                self.send()?;
            }
        }
        Ok(())
    }

    /// An empty part buffer: one returned by the uploader, a new one while fewer than
    /// [`PART_BUFFERS`] exist, else waits until the uploader returns one.
    fn next_buffer(&mut self) -> Result<Vec<u8>, UploadGone> {
        let returned = match self.free.try_recv() {
            Ok(b) => Some(b),
            Err(_) if self.allocated < PART_BUFFERS => None,
            Err(_) => {
                let (free, tx) = (&mut self.free, &self.tx);
                let got = self.runtime.block_on(async {
                    tokio::select! {
                        b = free.recv() => b,
                        _ = tx.closed() => None,
                    }
                });
                Some(got.ok_or(UploadGone)?)
            }
        };
        let mut buf = match returned {
            Some(b) => b,
            None => {
                self.allocated += 1;
                Vec::new()
            }
        };
        buf.clear();
        // A buffer the SDK still shared when its part was done comes back empty: allocate.
        buf.reserve_exact(self.part_size);
        Ok(buf)
    }

    fn send(&mut self) -> Result<(), UploadGone> {
        let Some(buf) = self.buf.take() else {
            return Ok(());
        };
        let part = Part {
            bytes: Bytes::from(buf),
            crc32: std::mem::take(&mut self.crc).finalize(),
        };
        self.tx.blocking_send(part).map_err(|_| UploadGone)
    }

    /// Hands over the last, partial part; the upload then waits for its decision.
    pub fn finish(mut self) -> Result<(), UploadGone> {
        if self.buf.as_ref().is_some_and(|b| !b.is_empty()) {
            self.send()?;
        }
        Ok(())
    }
}

/// What to do with an upload whose parts are all in.
pub struct S3Upload {
    decide: oneshot::Sender<Vec<u8>>,
    handle: tokio::task::JoinHandle<Result<u64, String>>,
}

impl S3Upload {
    /// Writes the manifest, then completes the upload (the snapshot becomes visible). Returns
    /// the object's size.
    pub async fn publish(self, manifest: Vec<u8>) -> Result<u64, BackupError> {
        // If the task already failed it dropped its receiver; its result says why.
        let _ = self.decide.send(manifest);
        match self.handle.await {
            Ok(r) => r.map_err(err),
            Err(e) => Err(err(format!("upload task failed: {e}"))),
        }
    }

    /// Aborts the upload and waits until S3 confirmed it (or refused: then the abort is logged).
    /// Returns the upload's own error if it had failed before.
    pub async fn abort(self) -> Option<String> {
        drop(self.decide);
        match self.handle.await {
            Ok(Err(e)) if e != ABORTED => Some(e),
            Ok(_) => None,
            Err(e) => Some(format!("upload task failed: {e}")),
        }
    }

    /// Whether the upload already failed (its task ended early).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

const ABORTED: &str = "aborted";

struct UploadTask {
    dest: S3Destination,
    name: String,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    /// Number of the last part started.
    next_part: i32,
    /// Where part buffers go back to the sender once uploaded.
    free: mpsc::Sender<Vec<u8>>,
}

impl UploadTask {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Part>,
        decide: oneshot::Receiver<Vec<u8>>,
    ) -> Result<u64, String> {
        let mut held: Option<Part> = None;
        let mut size = 0u64;
        let received: Result<(), String> = async {
            let mut in_flight = futures::stream::FuturesUnordered::new();
            let mut open = true;
            while open || !in_flight.is_empty() {
                tokio::select! {
                    part = rx.recv(), if open && in_flight.len() < UPLOADS_IN_FLIGHT => {
                        let Some(part) = part else {
                            open = false;
                            continue;
                        };
                        size += part.bytes.len() as u64;
                        if self.upload_id.is_none() {
                            let Some(first) = held.take() else {
                                held = Some(part);
                                continue;
                            };
                            self.create().await?;
                            in_flight.push(self.upload(first));
                        }
                        in_flight.push(self.upload(part));
                    }
                    Some(done) = futures::StreamExt::next(&mut in_flight) => {
                        let (completed, bytes) = done?;
                        self.parts.push(completed);
                        // Hand the buffer back for reuse (its request is done, so we should
                        // hold the only reference; if not, an empty one makes the sender
                        // allocate).
                        let buffer = bytes.try_into_mut().map(Vec::from).unwrap_or_default();
                        let _ = self.free.try_send(buffer);
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = received {
            drop(rx);
            drop(held);
            self.abort().await;
            return Err(e);
        }
        let Ok(manifest) = decide.await else {
            drop(held);
            self.abort().await;
            return Err(ABORTED.into());
        };
        let manifest_name = manifest_name(&self.name);
        if let Err(e) = self
            .dest
            .put(&manifest_name, Bytes::from(manifest), "application/json")
            .await
        {
            self.abort().await;
            return Err(e);
        }
        let done = match self.upload_id.clone() {
            Some(id) => self.complete(&id).await,
            None => {
                let body = held.take().map(|p| p.bytes).unwrap_or_default();
                self.dest
                    .put(&self.name, body, "application/octet-stream")
                    .await
            }
        };
        if let Err(e) = done {
            self.abort().await;
            if let Err(d) = self.dest.delete(&manifest_name).await {
                tracing::warn!(error = %d, "removing the manifest of an unpublished snapshot");
            }
            return Err(e);
        }
        Ok(size)
    }

    async fn create(&mut self) -> Result<(), String> {
        let mut req = self
            .dest
            .client
            .create_multipart_upload()
            .bucket(&self.dest.config.bucket)
            .key(self.dest.key(&self.name))
            .content_type("application/octet-stream")
            .checksum_algorithm(ChecksumAlgorithm::Crc32);
        if let Some(sse) = &self.dest.config.sse {
            req = req.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
        }
        let out = req.send().await.map_err(|e| {
            sdk(
                &format!("starting the upload of {}", self.dest.location(&self.name)),
                e,
            )
        })?;
        let id = out
            .upload_id()
            .ok_or_else(|| "the store returned no upload id".to_string())?;
        self.upload_id = Some(id.to_string());
        Ok(())
    }

    /// Starts the upload of the next part; the future owns what it needs, so several run at
    /// once. Resolves to the completed part and its buffer.
    fn upload(
        &mut self,
        part: Part,
    ) -> impl std::future::Future<Output = Result<(CompletedPart, Bytes), String>> + use<> {
        self.next_part += 1;
        let number = self.next_part;
        let request = self
            .dest
            .client
            .upload_part()
            .bucket(&self.dest.config.bucket)
            .key(self.dest.key(&self.name))
            .set_upload_id(self.upload_id.clone())
            .part_number(number)
            .checksum_crc32(crc32_header(part.crc32))
            .body(ByteStream::from(part.bytes.clone()));
        let location = self.dest.location(&self.name);
        async move {
            let out = request
                .send()
                .await
                .map_err(|e| sdk(&format!("uploading part {number} of {location}"), e))?;
            let completed = CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .checksum_crc32(crc32_header(part.crc32))
                .build();
            Ok((completed, part.bytes))
        }
    }

    async fn complete(&mut self, id: &str) -> Result<(), String> {
        // Parts finish in any order; S3 wants them listed in order.
        self.parts.sort_by_key(|p| p.part_number());
        self.dest
            .client
            .complete_multipart_upload()
            .bucket(&self.dest.config.bucket)
            .key(self.dest.key(&self.name))
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.parts.clone()))
                    .build(),
            )
            .if_none_match("*")
            .send()
            .await
            .map(drop)
            .map_err(|e| {
                let location = self.dest.location(&self.name);
                if taken(&e) {
                    already_there(&location)
                } else {
                    sdk(&format!("completing the upload of {location}"), e)
                }
            })
    }

    async fn abort(&mut self) {
        let Some(id) = self.upload_id.take() else {
            return;
        };
        let result = self
            .dest
            .client
            .abort_multipart_upload()
            .bucket(&self.dest.config.bucket)
            .key(self.dest.key(&self.name))
            .upload_id(&id)
            .send()
            .await;
        match result {
            Ok(_) => tracing::info!(
                object = %self.dest.location(&self.name),
                "multipart upload aborted; nothing was published"
            ),
            Err(e) => tracing::error!(
                object = %self.dest.location(&self.name),
                error = %sdk("abort", e),
                "aborting the multipart upload failed; a bucket lifecycle rule (AbortIncompleteMultipartUpload) cleans it up"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part carries the CRC32 of exactly its own bytes, whatever the writes' sizes.
    #[test]
    fn every_part_carries_its_own_crc32() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (tx, mut rx) = mpsc::channel(16);
        let (_free_tx, free_rx) = mpsc::channel(PART_BUFFERS);
        let mut sender = PartSender {
            tx,
            free: free_rx,
            allocated: 0,
            buf: None,
            crc: crc32fast::Hasher::new(),
            part_size: 1000,
            runtime: runtime.handle().clone(),
        };
        let data: Vec<u8> = (0..3500u32).map(|i| (i * 7 % 251) as u8).collect();
        for piece in data.chunks(333) {
            sender.write(piece).expect("write");
        }
        sender.finish().expect("finish");
        let mut parts = Vec::new();
        while let Ok(p) = rx.try_recv() {
            parts.push(p);
        }
        let sizes: Vec<usize> = parts.iter().map(|p| p.bytes.len()).collect();
        assert_eq!(sizes, [1000, 1000, 1000, 500]);
        for (part, expected) in parts.iter().zip(data.chunks(1000)) {
            assert_eq!(&part.bytes[..], expected);
            assert_eq!(part.crc32, crc32fast::hash(expected));
        }
        assert_eq!(crc32_header(0x1234_5678), "EjRWeA==");
    }
}
