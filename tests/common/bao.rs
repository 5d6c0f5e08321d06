//! A second, fresh OpenBao (raft storage) that a test starts itself on free loopback ports —
//! the target of restore tests. Initialised with one key share and unsealed; killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::daemon::free_port;
use super::wait_until;

pub struct FreshBao {
    pub addr: String,
    pub root_token: String,
    pub unseal_key: String,
    child: Child,
    pub dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl FreshBao {
    /// A new single-node cluster, initialised and unsealed.
    pub async fn start() -> FreshBao {
        let mut bao = Self::spawn(None).await;
        let (status, init) = bao
            .call(
                reqwest::Method::PUT,
                "sys/init",
                Some(json!({ "secret_shares": 1, "secret_threshold": 1 })),
                None,
            )
            .await;
        assert_eq!(status, 200, "init: {init}");
        bao.root_token = init["root_token"].as_str().expect("root").to_string();
        bao.unseal_key = init["keys_base64"][0].as_str().expect("key").to_string();
        super::daemon::record_canaries([bao.root_token.as_str(), bao.unseal_key.as_str()]);
        let key = bao.unseal_key.clone();
        bao.unseal(&key).await;
        bao.wait_active().await;
        bao
    }

    /// A second node that joins `leader`'s cluster (raft `retry_join`) and, unsealed with its
    /// key, becomes a standby.
    pub async fn join(leader: &FreshBao) -> FreshBao {
        let mut bao = Self::spawn(Some(&leader.addr)).await;
        bao.root_token = leader.root_token.clone();
        bao.unseal_key = leader.unseal_key.clone();
        // The join completes as the node is unsealed with the cluster's key; until it has
        // joined, unseal requests may be refused, so keep trying.
        let bao_ref = &bao;
        wait_until(
            Duration::from_secs(60),
            "the standby to join and unseal",
            || async move {
                let _ = bao_ref
                    .call(
                        reqwest::Method::PUT,
                        "sys/unseal",
                        Some(json!({ "key": bao_ref.unseal_key })),
                        None,
                    )
                    .await;
                // 429: an unsealed standby.
                let (status, _) = bao_ref
                    .call(reqwest::Method::GET, "sys/health", None, None)
                    .await;
                status == 429
            },
        )
        .await;
        bao
    }

    async fn spawn(join: Option<&str>) -> FreshBao {
        vault_steward::vault::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, cluster) = (free_port(), free_port());
        let addr = format!("http://127.0.0.1:{port}");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let retry_join = join
            .map(|leader| format!("  retry_join {{\n    leader_api_addr = \"{leader}\"\n  }}\n"))
            .unwrap_or_default();
        let data = dir.path().join("data");
        let config = format!(
            r#"storage "raft" {{
  path = "{data}"
  node_id = "fresh-{port}"
  performance_multiplier = 1
{retry_join}}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable = true
}}
api_addr = "{addr}"
cluster_addr = "http://127.0.0.1:{cluster}"
disable_mlock = true
ui = false
"#,
            data = data.display()
        );
        std::fs::write(dir.path().join("config.hcl"), config).expect("config");
        let log = std::fs::File::create(dir.path().join("bao.log")).expect("log");
        let child = Command::new(super::env("VS_TEST_BAO_BIN"))
            .arg("server")
            .arg(format!(
                "-config={}",
                dir.path().join("config.hcl").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start bao");
        let bao = FreshBao {
            addr,
            root_token: String::new(),
            unseal_key: String::new(),
            child,
            dir,
            http: reqwest::Client::new(),
        };
        let health = format!("{}/v1/sys/health", bao.addr);
        let http = bao.http.clone();
        wait_until(
            Duration::from_secs(30),
            "the fresh OpenBao to listen",
            || {
                let req = http.get(&health).send();
                async move { req.await.is_ok() }
            },
        )
        .await;
        bao
    }

    /// A raw request; `token` defaults to this server's root token.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", token.unwrap_or(&self.root_token));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn unseal(&self, key: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                "sys/unseal",
                Some(json!({ "key": key })),
                None,
            )
            .await;
        assert_eq!(status, 200, "unseal: {body}");
    }

    pub async fn sealed(&self) -> bool {
        let (_, body) = self
            .call(reqwest::Method::GET, "sys/seal-status", None, None)
            .await;
        body["sealed"].as_bool().unwrap_or(true)
    }

    /// Waits until the node is unsealed and active (health 200).
    pub async fn wait_active(&self) {
        let url = format!("{}/v1/sys/health", self.addr);
        let http = self.http.clone();
        wait_until(Duration::from_secs(60), "OpenBao to be active", || {
            let req = http.get(&url).send();
            async move { matches!(req.await, Ok(r) if r.status().as_u16() == 200) }
        })
        .await;
    }

    /// After a forced restore from another cluster the node seals itself; this waits for that,
    /// unseals it with that cluster's `key` and waits until it is active again.
    pub async fn reseal_and_unseal_with(&self, key: &str) {
        wait_until(
            Duration::from_secs(60),
            "OpenBao to seal after the restore",
            || self.sealed(),
        )
        .await;
        self.unseal(key).await;
        self.wait_active().await;
    }

    /// Reads a KV v2 secret's current data with `token`.
    pub async fn kv_get(&self, path: &str, token: &str) -> (u16, Value) {
        let (mount, rest) = path.split_once('/').expect("MOUNT/path");
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("{mount}/data/{rest}"),
                None,
                Some(token),
            )
            .await;
        (status, body["data"]["data"].clone())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
    }
}

impl Drop for FreshBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
