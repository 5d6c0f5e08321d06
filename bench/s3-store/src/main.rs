//! An S3 store for `bench/snapshot.sh` that stands in for S3's servers: it speaks the protocol
//! the way S3 does, but spends as little as it can of the two cores it shares with the clients
//! under test, as S3's own work runs on AWS's machines, not on the client's.
//!
//! - Every request is authenticated with SigV4 (by the `s3s` crate, which also checks a signed
//!   payload's SHA-256); a `x-amz-checksum-crc32` header is checked against the body (a mismatch
//!   is refused with BadDigest, as S3 refuses it).
//! - Completing a multipart upload joins the parts without copying them, as in S3 and MinIO.
//!   s3s-fs re-reads, re-hashes and copies every part in one thread, and moto concatenates them
//!   in Python: a serial tail of about 2 s per 512 MiB that no client can overlap with anything.
//! - ETags are opaque tokens, not MD5s (see [`etag`]).
//! - Objects live in memory.
//!
//!   bench-s3-store HOST:PORT ACCESS_KEY SECRET_KEY
//!
//! Operations: CreateBucket, HeadBucket, PutObject, GetObject (with ranges), HeadObject,
//! DeleteObject, ListObjectsV2 (prefix, delimiter, pages), CreateMultipartUpload, UploadPart,
//! CompleteMultipartUpload, AbortMultipartUpload, ListMultipartUploads (one page). Anything else
//! answers NotImplemented.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use std::sync::atomic::{AtomicU64, Ordering};

/// An object (or an uploaded part): its body as received, in the chunks it arrived in.
#[derive(Clone)]
struct Stored {
    chunks: Vec<Bytes>,
    size: u64,
    etag: String,
    crc32: Option<String>,
    modified: SystemTime,
}

struct Upload {
    bucket: String,
    key: String,
    parts: BTreeMap<i32, Stored>,
}

#[derive(Default)]
struct Store {
    buckets: Mutex<HashMap<String, BTreeMap<String, Stored>>>,
    uploads: Mutex<HashMap<String, Upload>>,
}

/// A fresh ETag. S3 makes its ETags from MD5s on its own machines; to a client an ETag is an
/// opaque token it hands back when completing an upload. Hashing here would spend the cores the
/// clients under test share (MD5 of 512 MiB is 0.7 s of CPU on this machine, more than any other
/// work of this store).
fn etag() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:032x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Reads a request body, checking its CRC32 when the client sent one.
async fn receive(body: Option<StreamingBlob>, crc32: Option<&str>) -> S3Result<Stored> {
    let mut body = body.ok_or_else(|| s3_error!(IncompleteBody))?;
    let (mut crc, mut chunks, mut size) = (crc32fast::Hasher::new(), Vec::new(), 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| s3_error!(IncompleteBody, "{e}"))?;
        if crc32.is_some() {
            crc.update(&chunk);
        }
        size += chunk.len() as u64;
        chunks.push(chunk);
    }
    if let Some(expected) = crc32 {
        use base64::Engine as _;
        let actual = base64::engine::general_purpose::STANDARD.encode(crc.finalize().to_be_bytes());
        if actual != expected {
            return Err(s3_error!(
                BadDigest,
                "CRC32 {expected} does not match the body's {actual}"
            ));
        }
    }
    Ok(Stored {
        chunks,
        size,
        etag: etag(),
        crc32: crc32.map(str::to_string),
        modified: SystemTime::now(),
    })
}

impl Store {
    fn object(&self, bucket: &str, key: &str) -> S3Result<Stored> {
        let buckets = self.buckets.lock().unwrap();
        let objects = buckets.get(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        objects
            .get(key)
            .cloned()
            .ok_or_else(|| s3_error!(NoSuchKey))
    }

    fn insert(&self, bucket: &str, key: String, object: Stored) -> S3Result<()> {
        let mut buckets = self.buckets.lock().unwrap();
        let objects = buckets
            .get_mut(bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        objects.insert(key, object);
        Ok(())
    }
}

/// The bytes `range` of an object's chunks, as a stream of (sub-)chunks.
fn slice(chunks: Vec<Bytes>, range: std::ops::Range<u64>) -> Vec<Bytes> {
    let (mut out, mut at) = (Vec::new(), 0u64);
    for c in chunks {
        let (start, end) = (at, at + c.len() as u64);
        at = end;
        if end <= range.start || start >= range.end {
            continue;
        }
        let from = range.start.saturating_sub(start) as usize;
        let to = (range.end.min(end) - start) as usize;
        out.push(c.slice(from..to));
    }
    out
}

#[async_trait::async_trait]
impl S3 for Store {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.contains_key(&req.input.bucket) {
            return Err(s3_error!(BucketAlreadyOwnedByYou));
        }
        buckets.insert(req.input.bucket, BTreeMap::new());
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        if !self.buckets.lock().unwrap().contains_key(&req.input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let object = receive(input.body, input.checksum_crc32.as_deref()).await?;
        let output = PutObjectOutput {
            e_tag: Some(ETag::Strong(object.etag.clone())),
            checksum_crc32: object.crc32.clone(),
            ..Default::default()
        };
        self.insert(&input.bucket, input.key, object)?;
        Ok(S3Response::new(output))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let object = self.object(&input.bucket, &input.key)?;
        let (range, content_range) = match input.range {
            None => (0..object.size, None),
            Some(r) => {
                let r = r.check(object.size)?;
                let shown = format!("bytes {}-{}/{}", r.start, r.end - 1, object.size);
                (r, Some(shown))
            }
        };
        let length = range.end - range.start;
        let chunks = slice(object.chunks, range);
        let body = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(length as i64),
            content_range,
            e_tag: Some(ETag::Strong(object.etag)),
            last_modified: Some(Timestamp::from(object.modified)),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let object = self.object(&req.input.bucket, &req.input.key)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(object.size as i64),
            e_tag: Some(ETag::Strong(object.etag)),
            last_modified: Some(Timestamp::from(object.modified)),
            checksum_crc32: object.crc32,
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let mut buckets = self.buckets.lock().unwrap();
        let objects = buckets
            .get_mut(&req.input.bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        objects.remove(&req.input.key);
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let buckets = self.buckets.lock().unwrap();
        let objects = buckets
            .get(&input.bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_keys.unwrap_or(1000).clamp(1, 1000) as usize;
        let after = input
            .continuation_token
            .clone()
            .or(input.start_after.clone())
            .unwrap_or_default();
        let (mut contents, mut prefixes) = (Vec::new(), Vec::<String>::new());
        let mut last = None;
        let mut truncated = false;
        for (key, object) in objects.range(after.clone()..) {
            if *key == after || !key.starts_with(&prefix) {
                continue;
            }
            if contents.len() + prefixes.len() == max {
                truncated = true;
                break;
            }
            let rest = &key[prefix.len()..];
            match input
                .delimiter
                .as_deref()
                .and_then(|d| rest.find(d).map(|i| i + d.len()))
            {
                Some(end) => {
                    let common = format!("{prefix}{}", &rest[..end]);
                    if prefixes.last() != Some(&common) {
                        prefixes.push(common);
                    }
                }
                None => contents.push(Object {
                    key: Some(key.clone()),
                    size: Some(object.size as i64),
                    e_tag: Some(ETag::Strong(object.etag.clone())),
                    last_modified: Some(Timestamp::from(object.modified)),
                    ..Default::default()
                }),
            }
            last = Some(key.clone());
        }
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            max_keys: Some(max as i32),
            key_count: Some((contents.len() + prefixes.len()) as i32),
            is_truncated: Some(truncated),
            next_continuation_token: if truncated { last } else { None },
            continuation_token: input.continuation_token,
            contents: Some(contents),
            common_prefixes: Some(
                prefixes
                    .into_iter()
                    .map(|p| CommonPrefix { prefix: Some(p) })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        if !self.buckets.lock().unwrap().contains_key(&input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.uploads.lock().unwrap().insert(
            id.clone(),
            Upload {
                bucket: input.bucket.clone(),
                key: input.key.clone(),
                parts: BTreeMap::new(),
            },
        );
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "part number out of range"));
        }
        if !self.uploads.lock().unwrap().contains_key(&input.upload_id) {
            return Err(s3_error!(NoSuchUpload));
        }
        let part = receive(input.body, input.checksum_crc32.as_deref()).await?;
        let output = UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag.clone())),
            checksum_crc32: part.crc32.clone(),
            ..Default::default()
        };
        let mut uploads = self.uploads.lock().unwrap();
        let upload = uploads
            .get_mut(&input.upload_id)
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        upload.parts.insert(input.part_number, part);
        Ok(S3Response::new(output))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| s3_error!(InvalidPart, "no parts listed"))?;
        let mut upload = self
            .uploads
            .lock()
            .unwrap()
            .remove(&input.upload_id)
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        if upload.bucket != input.bucket || upload.key != input.key {
            return Err(s3_error!(NoSuchUpload));
        }
        // The object is its parts, in the listed order: no byte is copied.
        let (mut chunks, mut size, mut previous) = (Vec::new(), 0u64, 0);
        let count = listed.len();
        for (i, p) in listed.into_iter().enumerate() {
            let number = p.part_number.unwrap_or(0);
            if number <= previous {
                return Err(s3_error!(InvalidPartOrder));
            }
            previous = number;
            let part = upload
                .parts
                .remove(&number)
                .ok_or_else(|| s3_error!(InvalidPart))?;
            let listed_etag = p
                .e_tag
                .as_ref()
                .map(|e| e.value().trim_matches('"').to_string());
            if listed_etag.as_deref() != Some(part.etag.as_str()) {
                return Err(s3_error!(InvalidPart, "part {number}: ETag does not match"));
            }
            if i + 1 < count && part.size < 5 << 20 {
                return Err(s3_error!(EntityTooSmall));
            }
            size += part.size;
            chunks.extend(part.chunks);
        }
        let etag = format!("{}-{count}", etag());
        let object = Stored {
            chunks,
            size,
            etag: etag.clone(),
            crc32: None,
            modified: SystemTime::now(),
        };
        self.insert(&input.bucket, input.key.clone(), object)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut listed: Vec<MultipartUpload> = self
            .uploads
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, u)| u.bucket == input.bucket && u.key.starts_with(&prefix))
            .map(|(id, u)| MultipartUpload {
                key: Some(u.key.clone()),
                upload_id: Some(id.clone()),
                ..Default::default()
            })
            .collect();
        listed.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        // One page, whatever the count: a bench has a handful of uploads at most.
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            uploads: Some(listed),
            is_truncated: Some(false),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.uploads
            .lock()
            .unwrap()
            .remove(&req.input.upload_id)
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, access, secret] = args.as_slice() else {
        return Err("usage: bench-s3-store HOST:PORT ACCESS_KEY SECRET_KEY".into());
    };
    let service = {
        let mut b = S3ServiceBuilder::new(Store::default());
        b.set_auth(SimpleAuth::from_single(access.clone(), secret.clone()));
        b.build()
    };
    let listener = tokio::net::TcpListener::bind(addr.as_str()).await?;
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = listener.accept().await?;
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
