//! Database users for `postgres` and `mysql` jobs on the real servers: the testbed's private
//! PostgreSQL cluster and the machine's MariaDB. [`Setup`] gives one job its own roles/users,
//! admin login, KV paths and scoped Vault token (and drops the users again); [`Engine::login`]
//! proves a credential logs in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::daemon::{DaemonConfig, record_canaries};
use super::vault::RootVault;
use super::{env, unique};
use sqlx::Connection;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use vault_steward::store::{AlertStatus, Store};

// ---- the two engines -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Single,
    Alternating,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Single => "single",
            Strategy::Alternating => "alternating",
        }
    }
}

impl Engine {
    pub fn kind(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }

    pub fn root_url(self) -> url::Url {
        let var = match self {
            Engine::Postgres => "VS_TEST_PG_URL",
            Engine::Mysql => "VS_TEST_MYSQL_URL",
        };
        url::Url::parse(&env(var)).expect("database URL")
    }

    /// The server's own address (not a proxy).
    pub fn server(self) -> (String, u16) {
        server_of(self, &self.root_url())
    }

    /// The database consumers use.
    pub fn database(self) -> String {
        self.root_url().path().trim_start_matches('/').to_string()
    }

    pub async fn root_exec(self, statements: &[String]) {
        self.root_exec_on(&self.root_url(), statements).await;
    }

    /// Runs `statements` as the superuser of the server at `root` (the testbed's or a private
    /// one, see [`super::mariadb`]).
    pub async fn root_exec_on(self, root: &url::Url, statements: &[String]) {
        match self {
            Engine::Postgres => {
                let mut c = PgConnection::connect(root.as_str())
                    .await
                    .expect("superuser connection");
                for s in statements {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(s.as_str()))
                        .execute(&mut c)
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
                let _ = c.close().await;
            }
            Engine::Mysql => {
                let mut c = MySqlConnection::connect(root.as_str())
                    .await
                    .expect("root connection");
                for s in statements {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(s.as_str()))
                        .execute(&mut c)
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
                let _ = c.close().await;
            }
        }
    }

    pub async fn create_user(self, name: &str, password: &str) {
        self.create_user_on(&self.root_url(), name, password).await;
    }

    pub async fn create_user_on(self, root: &url::Url, name: &str, password: &str) {
        let sql = match self {
            Engine::Postgres => vec![format!(
                "CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'"
            )],
            Engine::Mysql => vec![
                format!("CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'"),
                format!("GRANT SELECT ON `{}`.* TO '{name}'@'%'", self.database()),
            ],
        };
        self.root_exec_on(root, &sql).await;
    }

    /// An admin allowed to change the managed users' passwords, and nothing more.
    pub async fn create_admin(self, name: &str, password: &str, managed: &[&str]) {
        self.create_admin_on(&self.root_url(), name, password, managed)
            .await;
    }

    pub async fn create_admin_on(
        self,
        root: &url::Url,
        name: &str,
        password: &str,
        managed: &[&str],
    ) {
        let mut sql = match self {
            Engine::Postgres => vec![format!(
                "CREATE ROLE \"{name}\" LOGIN CREATEROLE PASSWORD '{password}'"
            )],
            Engine::Mysql => vec![
                format!("CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'"),
                format!("GRANT CREATE USER ON *.* TO '{name}'@'%'"),
            ],
        };
        if self == Engine::Postgres {
            // PostgreSQL 16+ wants ADMIN OPTION on the role as well; 15 accepts it too.
            for m in managed {
                sql.push(format!("GRANT \"{m}\" TO \"{name}\" WITH ADMIN OPTION"));
            }
        }
        self.root_exec_on(root, &sql).await;
    }

    pub async fn drop_users(self, names: &[String]) {
        self.drop_users_on(&self.root_url(), names).await;
    }

    pub async fn drop_users_on(self, root: &url::Url, names: &[String]) {
        let sql: Vec<String> = names
            .iter()
            .map(|n| match self {
                Engine::Postgres => format!("DROP ROLE IF EXISTS \"{n}\""),
                Engine::Mysql => format!("DROP USER IF EXISTS '{n}'@'%'"),
            })
            .collect();
        self.root_exec_on(root, &sql).await;
    }

    /// A login as `user` with `password` on the real server; why not if it failed.
    pub async fn login(self, user: &str, password: &str) -> Result<(), LoginError> {
        let (host, port) = self.server();
        self.login_at(&host, port, user, password).await
    }

    pub async fn login_at(
        self,
        host: &str,
        port: u16,
        user: &str,
        password: &str,
    ) -> Result<(), LoginError> {
        let db = self.database();
        let result = match self {
            Engine::Postgres => {
                let o = PgConnectOptions::new_without_pgpass()
                    .host(host)
                    .port(port)
                    .username(user)
                    .password(password)
                    .database(&db);
                match PgConnection::connect_with(&o).await {
                    Ok(c) => {
                        let _ = c.close().await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Engine::Mysql => {
                let o = MySqlConnectOptions::new()
                    .host(host)
                    .port(port)
                    .username(user)
                    .password(password)
                    .database(&db);
                match MySqlConnection::connect_with(&o).await {
                    Ok(c) => {
                        let _ = c.close().await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        result.map_err(|e| LoginError::new(self, &e, password))
    }

    /// The server's answer to a wrong password: PostgreSQL's SQLSTATE 28P01
    /// (invalid_password), MariaDB's error 1045 (ER_ACCESS_DENIED_ERROR).
    pub fn wrong_password_code(self) -> &'static str {
        match self {
            Engine::Postgres => "28P01",
            Engine::Mysql => "1045",
        }
    }
}

/// Why a test login failed: the server's code (PostgreSQL SQLSTATE, MariaDB error number) if
/// the server answered, and the error text with the password scrubbed.
#[derive(Debug, Clone)]
pub struct LoginError {
    pub code: Option<String>,
    pub text: String,
}

impl LoginError {
    fn new(engine: Engine, e: &sqlx::Error, password: &str) -> LoginError {
        let code = match e {
            sqlx::Error::Database(db) => match engine {
                Engine::Postgres => db.code().map(|c| c.to_string()),
                Engine::Mysql => db
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|m| m.number().to_string()),
            },
            _ => None,
        };
        LoginError {
            code,
            text: e.to_string().replace(password, "[pw]"),
        }
    }
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} ({code})", self.text),
            None => f.write_str(&self.text),
        }
    }
}

// ---- one job's world: users, admin, KV, token, config -----------------------------------

pub struct Setup {
    pub engine: Engine,
    pub job: String,
    /// The rotated users (one, or two for alternating).
    pub users: Vec<String>,
    /// Users the test created (dropped at the end).
    pub created: Vec<String>,
    /// The first user's initial password (what KV holds at the start).
    pub initial_password: String,
    /// The other user's initial password (alternating).
    pub other_password: String,
    pub path: String,
    pub admin_path: String,
    pub pending_path: String,
    pub cfg: DaemonConfig,
    /// The scoped Vault token and the job file of `cfg`, for daemons configured otherwise
    /// (several instances on PostgreSQL).
    pub token: String,
    pub job_toml: String,
    pub vault: RootVault,
    /// The superuser URL of the server the users live on (the testbed's, or a private one).
    pub root: url::Url,
    /// Set by [`Setup::cleanup`]; otherwise (a failed assertion) `Drop` drops the users.
    pub cleaned: AtomicBool,
}

pub struct Options {
    /// Admin host/port as written into the admin secret (a proxy for "database down").
    pub admin_at: Option<(String, u16)>,
    /// Write a wrong password into the admin secret.
    pub wrong_admin_password: bool,
    /// Do not create the second alternating user.
    pub second_user_missing: bool,
    /// The token may only read the consumers' path.
    pub read_only_path: bool,
    pub every: &'static str,
    /// The job's `database` (default: the server's test database).
    pub job_database: Option<String>,
    /// A `database` field in the admin secret.
    pub admin_database: Option<String>,
    /// The superuser URL of a private server to use instead of the testbed's (see
    /// [`super::mariadb::PrivateMariadb`]); it must have the engine's test database.
    pub server: Option<url::Url>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            admin_at: None,
            wrong_admin_password: false,
            second_user_missing: false,
            read_only_path: false,
            every: "90d",
            job_database: None,
            admin_database: None,
            server: None,
        }
    }
}

pub fn password(label: &str) -> String {
    // Alphanumeric only (safe in the test's own SQL), long enough for the canary scan.
    unique(label).replace('_', "x")
}

impl Setup {
    pub async fn new(engine: Engine, strategy: Strategy, opts: Options) -> Setup {
        let vault = RootVault::new();
        let prefix = unique("db");
        let job = unique(&format!("{}-{}", engine.kind(), strategy.name()));
        let tag = unique("u");
        let users = match strategy {
            Strategy::Single => vec![format!("{tag}_app")],
            Strategy::Alternating => vec![format!("{tag}_a"), format!("{tag}_b")],
        };
        let initial_password = password("init");
        let other_password = password("other");
        let admin = format!("{tag}_adm");
        let admin_password = password("admin");
        record_canaries([
            initial_password.as_str(),
            other_password.as_str(),
            admin_password.as_str(),
        ]);
        let root = opts.server.clone().unwrap_or_else(|| engine.root_url());
        let mut created = vec![users[0].clone()];
        engine
            .create_user_on(&root, &users[0], &initial_password)
            .await;
        if users.len() == 2 && !opts.second_user_missing {
            engine
                .create_user_on(&root, &users[1], &other_password)
                .await;
            created.push(users[1].clone());
        }
        let managed: Vec<&str> = created.iter().map(String::as_str).collect();
        engine
            .create_admin_on(&root, &admin, &admin_password, &managed)
            .await;
        created.push(admin.clone());

        let path = format!("secret/{prefix}/db");
        let admin_path = format!("secret/{prefix}/admin");
        let pending_path = format!("secret/vault-steward/pending/{job}");
        let (host, port) = opts
            .admin_at
            .clone()
            .unwrap_or_else(|| server_of(engine, &root));
        let admin_secret_password = if opts.wrong_admin_password {
            let wrong = password("wrong");
            record_canaries([wrong.as_str()]);
            wrong
        } else {
            admin_password.clone()
        };
        let mut admin_secret = serde_json::json!({
            "username": admin,
            "password": admin_secret_password,
            "host": host,
            "port": port.to_string(),
        });
        if let Some(db) = &opts.admin_database {
            admin_secret["database"] = serde_json::Value::String(db.clone());
        }
        vault.kv_put(&admin_path, admin_secret).await;
        vault
            .kv_put(
                &path,
                serde_json::json!({
                    "username": users[0],
                    "password": initial_password,
                    "host": host,
                    "port": port.to_string(),
                    "database": engine.database(),
                    "owner": "team-orders",
                }),
            )
            .await;

        let consumer_caps = if opts.read_only_path {
            r#"["read"]"#
        } else {
            r#"["create", "read", "update"]"#
        };
        let policy = unique("dbsteward");
        vault
            .put_policy(
                &policy,
                &format!(
                    r#"
path "secret/data/{prefix}/db" {{ capabilities = {consumer_caps} }}
path "secret/metadata/{prefix}/db" {{ capabilities = {consumer_caps} }}
path "secret/data/{prefix}/admin" {{ capabilities = ["read"] }}
path "secret/data/vault-steward/pending/{job}" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/vault-steward/pending/{job}" {{ capabilities = ["read", "delete"] }}
"#
                ),
            )
            .await;
        let token = vault.create_token(&[&policy], "2h").await;
        let user_line = match strategy {
            Strategy::Single => format!("username = \"{}\"", users[0]),
            Strategy::Alternating => format!(
                "usernames = [\"{}\", \"{}\"]\nstrategy = \"alternating\"",
                users[0], users[1]
            ),
        };
        let job_toml = format!(
            r#"[[job]]
name = "{job}"
kind = "{kind}"
path = "{path}"
admin_path = "{admin_path}"
every = "{every}"
database = "{database}"
{user_line}
"#,
            kind = engine.kind(),
            every = opts.every,
            database = opts
                .job_database
                .clone()
                .unwrap_or_else(|| engine.database()),
        );
        let cfg =
            DaemonConfig::with_extra(&token, &job_toml, "[alerts]\nfailures_before_alert = 1\n");
        Setup {
            engine,
            job,
            users,
            created,
            initial_password,
            other_password,
            path,
            admin_path,
            pending_path,
            cfg,
            token,
            job_toml,
            vault,
            root,
            cleaned: AtomicBool::new(false),
        }
    }

    /// (version, username, password) of the consumers' secret; records the password.
    pub async fn current(&self) -> (u64, String, String) {
        let kv = self
            .vault
            .kv_get(&self.path)
            .await
            .expect("consumer secret");
        let user = kv.data["username"].as_str().expect("username").to_string();
        let pw = kv.data["password"].as_str().expect("password").to_string();
        record_canaries(
            [
                pw.as_str(),
                kv.data.get("url").and_then(|u| u.as_str()).unwrap_or(""),
            ]
            .into_iter()
            .filter(|s| s.len() >= 8),
        );
        (kv.version, user, pw)
    }

    pub fn rotate(&self) -> (std::process::ExitStatus, String, String) {
        self.cfg.cli(&["rotate", &self.job])
    }

    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub fn rotate_crashing_at(
        &self,
        failpoint: &str,
    ) -> (std::process::ExitStatus, String, String) {
        self.cfg.cli_env(
            &["rotate", &self.job],
            &[("VAULT_STEWARD_FAILPOINT", failpoint)],
        )
    }

    pub async fn store(&self) -> Arc<dyn Store> {
        vault_steward::store::open(&format!("sqlite://{}", self.cfg.state_db().display()), None)
            .await
            .expect("state store")
    }

    pub async fn open_rotations(&self) -> usize {
        self.store()
            .await
            .open_rotations(Some(&self.job))
            .await
            .expect("open rotations")
            .len()
    }

    /// Waits (up to 30 s) until the job has no rotation open and a success recorded: a daemon
    /// rolled the open rotation forward.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub async fn wait_rolled_forward(&self, what: &str) {
        let store = self.store().await;
        let job = self.job.clone();
        super::wait_until(std::time::Duration::from_secs(30), what, || {
            let (store, job) = (store.clone(), job.clone());
            async move {
                store.open_rotations(Some(&job)).await.unwrap().is_empty()
                    && store
                        .job_state(&job)
                        .await
                        .unwrap()
                        .is_some_and(|st| st.last_success_at.is_some())
            }
        })
        .await;
    }

    /// Rewrites the job file's `every = …` line as `line`.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub fn set_every_line(&self, line: &str) {
        let job_file = self.cfg.dir.path().join("jobs/test.toml");
        let text = std::fs::read_to_string(&job_file).unwrap();
        let every = text
            .lines()
            .find(|l| l.starts_with("every = "))
            .expect("every")
            .to_string();
        std::fs::write(&job_file, text.replace(&every, line)).unwrap();
    }

    pub async fn pending_exists(&self) -> bool {
        self.vault.kv_metadata(&self.pending_path).await.is_some()
    }

    /// The pending password, if one is waiting (recorded as a canary).
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub async fn pending_password(&self) -> Option<String> {
        let kv = self.vault.kv_get(&self.pending_path).await?;
        let pw = kv.data["password"].as_str()?.to_string();
        record_canaries([pw.as_str()]);
        Some(pw)
    }

    /// `status --json` row of the job.
    pub fn status(&self) -> serde_json::Value {
        let (st, out, err) = self.cfg.cli(&["status", "--json"]);
        assert!(st.success(), "status: {err}");
        let rows: serde_json::Value = serde_json::from_str(&out).expect("status json");
        rows.as_array()
            .expect("rows")
            .iter()
            .find(|r| r["job"] == self.job.as_str())
            .cloned()
            .expect("the job's row")
    }

    pub async fn alert_firing(&self, name: &str) -> bool {
        let fp = vault_steward::alert::fingerprint(name, &self.job);
        matches!(
            self.store().await.alert(&fp).await.expect("alert"),
            Some(a) if a.status == AlertStatus::Firing
        )
    }

    /// The address of the server the users live on.
    pub fn server(&self) -> (String, u16) {
        server_of(self.engine, &self.root)
    }

    /// A login on the setup's server (see [`Engine::login`]).
    pub async fn login(&self, user: &str, password: &str) -> Result<(), LoginError> {
        let (host, port) = self.server();
        self.engine.login_at(&host, port, user, password).await
    }

    pub async fn cleanup(&self) {
        self.engine.drop_users_on(&self.root, &self.created).await;
        self.cleaned.store(true, Ordering::Relaxed);
    }
}

impl Drop for Setup {
    /// MariaDB is the machine's, shared by every test run: a test that panicked still drops
    /// the users it created (on a thread of its own, as this may run inside the runtime).
    fn drop(&mut self) {
        if self.cleaned.load(Ordering::Relaxed) {
            return;
        }
        let (engine, root, users) = (self.engine, self.root.clone(), self.created.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(engine.drop_users_on(&root, &users));
            }
        })
        .join();
    }
}

/// (host, port) of the server a superuser URL points at.
fn server_of(engine: Engine, root: &url::Url) -> (String, u16) {
    (
        root.host_str().expect("host").to_string(),
        root.port().unwrap_or(match engine {
            Engine::Postgres => 5432,
            Engine::Mysql => 3306,
        }),
    )
}

/// Asserts the server refuses `pw` for `user` as a wrong password (PostgreSQL 28P01, MariaDB
/// 1045): not merely any failure, which an unreachable server or a missing database would
/// also be.
pub async fn assert_refused(engine: Engine, user: &str, pw: &str, what: &str) {
    check_refused(engine, engine.login(user, pw).await, user, what);
}

pub async fn assert_logs_in(engine: Engine, user: &str, pw: &str, what: &str) {
    if let Err(e) = engine.login(user, pw).await {
        panic!("{what}: a login as {user} was refused: {e}");
    }
}

impl Setup {
    /// [`assert_refused`] on the setup's server.
    pub async fn assert_refused(&self, user: &str, pw: &str, what: &str) {
        check_refused(self.engine, self.login(user, pw).await, user, what);
    }

    /// [`assert_logs_in`] on the setup's server.
    pub async fn assert_logs_in(&self, user: &str, pw: &str, what: &str) {
        if let Err(e) = self.login(user, pw).await {
            panic!("{what}: a login as {user} was refused: {e}");
        }
    }
}

fn check_refused(engine: Engine, result: Result<(), LoginError>, user: &str, what: &str) {
    let expected = engine.wrong_password_code();
    match result {
        Ok(()) => panic!("{what}: a login as {user} was accepted"),
        Err(e) if e.code.as_deref() == Some(expected) => {}
        Err(e) => panic!(
            "{what}: a login as {user} failed, but not as a wrong password ({expected}): {e}"
        ),
    }
}
