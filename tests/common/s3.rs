//! An S3 client for tests, pointed at the testbed's moto (`VS_TEST_S3_ENDPOINT`, path style, the
//! testbed's dummy credentials): make buckets, see what landed, put foreign objects.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;

/// A client for `endpoint` (default: the testbed's moto).
pub async fn client_for(endpoint: &str) -> Client {
    vault_steward::vault::install_crypto_provider();
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .build();
    Client::from_conf(conf)
}

pub async fn client() -> Client {
    client_for(&super::env("VS_TEST_S3_ENDPOINT")).await
}

/// Creates a fresh bucket with a unique name; returns it.
pub async fn bucket(client: &Client) -> String {
    let name = super::unique("snap").replace('_', "-").to_lowercase();
    client
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create bucket");
    name
}

/// Every key under `prefix` (all pages), sorted.
pub async fn keys(client: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        for o in page.expect("list").contents() {
            out.push(o.key().unwrap_or_default().to_string());
        }
    }
    out.sort();
    out
}

/// Multipart uploads still open under `prefix`.
pub async fn open_uploads(client: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list multipart uploads");
    out.uploads()
        .iter()
        .map(|u| u.key().unwrap_or_default().to_string())
        .collect()
}

/// The CRC32 the store recorded for `key` (`HeadObject` with checksum mode), as S3 writes it:
/// base64, with `-PARTS` for a multipart upload's composite checksum.
pub async fn stored_crc32(client: &Client, bucket: &str, key: &str) -> Option<String> {
    client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap_or_else(|e| panic!("head {key}: {e:?}"))
        .checksum_crc32()
        .map(str::to_string)
}

pub async fn get(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"))
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec()
}

pub async fn put(client: &Client, bucket: &str, key: &str, body: Vec<u8>) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}
