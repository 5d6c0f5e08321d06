//! The baseline of `bench/rotation_sweep.sh`: a plain concurrent KV v2 writer doing the same
//! Vault writes as one `api-key` rotation of a new key — the new version (check-and-set 0) and
//! its `custom_metadata` — for COUNT keys, CONCURRENCY at a time, with nothing else around it
//! (no state store, no locks, no reads). Prints keys/s; never prints a value.
//!
//!   kv_sweep_writer ADDR TOKEN_FILE PATH_PREFIX COUNT CONCURRENCY
//!   e.g. kv_sweep_writer http://127.0.0.1:8200 /run/token secret/bench-plain 10000 16

use std::time::Instant;

use futures::StreamExt;
use rand::RngCore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, token_file, prefix, count, concurrency] = args.as_slice() else {
        anyhow::bail!("usage: kv_sweep_writer ADDR TOKEN_FILE PATH_PREFIX COUNT CONCURRENCY");
    };
    let count: usize = count.parse()?;
    let concurrency: usize = concurrency.parse()?;
    let token = std::fs::read_to_string(token_file)?.trim().to_string();
    let (mount, rest) = prefix
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("PATH_PREFIX must be MOUNT/PATH"))?;
    vault_steward::vault::install_crypto_provider();
    let http = reqwest::Client::builder().build()?;

    let started = Instant::now();
    let mut failures = 0usize;
    let mut results = futures::stream::iter(0..count)
        .map(|i| {
            let (http, token) = (http.clone(), token.clone());
            let data_url = format!("{addr}/v1/{mount}/data/{rest}/key-{i:05}");
            let meta_url = format!("{addr}/v1/{mount}/metadata/{rest}/key-{i:05}");
            async move {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                let body = serde_json::json!({
                    "options": { "cas": 0 },
                    "data": { "api_key": hex::encode(bytes) },
                });
                let r = http
                    .post(&data_url)
                    .header("X-Vault-Token", &token)
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "data write: {}", r.status());
                let md = serde_json::json!({ "custom_metadata": {
                    "rotated_by": "vault-steward",
                    "rotation_job": format!("key-{i:05}"),
                    "rotated_at": chrono::Utc::now().to_rfc3339(),
                }});
                let r = http
                    .post(&meta_url)
                    .header("X-Vault-Token", &token)
                    .json(&md)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "metadata write: {}", r.status());
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = results.next().await {
        if let Err(e) = r {
            failures += 1;
            if failures <= 3 {
                eprintln!("kv_sweep_writer: {e}");
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(failures == 0, "{failures} of {count} keys failed");
    println!(
        "{count} {secs:.3} {:.1}",
        count as f64 / secs.max(f64::EPSILON)
    );
    Ok(())
}
