//! Streaming one snapshot up: a multipart upload of unknown length, three parts at a time; at
//! most four parts exist in memory (one filling, three uploading), which bounds the memory a
//! snapshot takes whatever its size.
//! The first part is held back until a second one exists, so a small snapshot becomes one plain
//! `PutObject` at the end. Nothing is visible in the bucket until [`S3Upload::publish`]: it writes
//! the manifest, then completes the upload. Every other way out — an error, [`S3Upload::abort`],
//! or dropping the upload (the run timed out or was cancelled) — aborts the multipart upload.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{S3Destination, already_there, crc32_header, err, sdk, taken};
use crate::backup::{BackupError, manifest_name};

/// Parts uploading at once. S3 (and S3-compatible stores) take parts in parallel far faster
/// than one after the other.
const UPLOADS_IN_FLIGHT: usize = 3;
/// Part buffers per upload: one filling while the others upload. The memory a snapshot takes is
/// this many parts.
pub const PART_BUFFERS: usize = UPLOADS_IN_FLIGHT + 1;

impl S3Destination {
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
            .abort_upload(&self.dest.key(&self.name), &id)
            .await;
        match result {
            Ok(()) => tracing::info!(
                object = %self.dest.location(&self.name),
                "multipart upload aborted; nothing was published"
            ),
            Err(e) => tracing::error!(
                object = %self.dest.location(&self.name),
                error = %e,
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
