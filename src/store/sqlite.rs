//! The SQLite backend of the [`Store`](super::Store): the default, one file on the daemon's host.
//!
//! Owns opening the file safely — parent directory created (0700), the database and its WAL/SHM
//! side files readable by the owner only (0600, tightened if they were looser), WAL journal,
//! `busy_timeout`, foreign keys — and the single-daemon guard: [`SqliteStore::open_exclusive`]
//! holds an advisory `flock` on `state.db.lock` for the life of the store. Plain
//! [`SqliteStore::open`] takes no such lock, so short CLI commands can share the file with the
//! running daemon; they coordinate through the per-job locks in the database. The queries
//! themselves are shared with PostgreSQL (see `queries`).

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions, Permissions, TryLockError};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::StoreError;
use super::queries::impl_store;

/// How long a statement waits for another connection's (or process's) write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per pool: SQLite serialises writers anyway; a few let readers run alongside.
const MAX_CONNECTIONS: u32 = 4;

/// State store on SQLite.
pub struct SqliteStore {
    pool: SqlitePool,
    /// `None` for an in-memory database.
    path: Option<PathBuf>,
    /// Held so the `flock` lasts as long as the store: see [`Self::open_exclusive`].
    lock: Option<File>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field(
                "path",
                &self.path.as_deref().unwrap_or(Path::new(":memory:")),
            )
            .field("exclusive", &self.lock.is_some())
            .finish()
    }
}

/// Where a `sqlite:` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Memory,
    File(PathBuf),
}

impl SqliteStore {
    /// Opens (creating if needed) the database of a `sqlite:///abs/path`, `sqlite://relative`
    /// or `sqlite::memory:` URL and applies migrations. Takes no process lock: for the daemon use
    /// [`Self::open_exclusive`].
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, false).await
    }

    /// Like [`Self::open`], but first takes an exclusive advisory lock on the sibling file
    /// `PATH.lock` (recording our pid in it) and keeps it while the store lives. A second
    /// `open_exclusive` of the same file, from any process, fails with [`StoreError::InUse`]
    /// naming the file and the holder's pid.
    pub async fn open_exclusive(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, true).await
    }

    /// The database file (`None` for an in-memory database).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Closes the pool's connections (checkpointing the WAL); the lock file, if any, is released
    /// when the store is dropped.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn open_with(url: &str, exclusive: bool) -> Result<Self, StoreError> {
        let (options, pool_options, path, lock) = match parse_url(url)? {
            Location::Memory => (
                SqliteConnectOptions::new().in_memory(true),
                // Every connection to `:memory:` is a database of its own: keep exactly one,
                // forever.
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None),
                None,
                None,
            ),
            Location::File(path) => {
                create_parent(&path)?;
                // Before touching the database, so a second daemon changes nothing.
                let lock = exclusive.then(|| lock_exclusive(&path)).transpose()?;
                // Create or tighten the file before SQLite opens it: SQLite would create it with
                // the umask's mode, and it gives the -wal/-shm files the mode of the database.
                secure_file(&path, true)?;
                for side in ["-wal", "-shm"] {
                    secure_file(&side_file(&path, side), false)?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // NORMAL (with WAL): a commit survives the process's crash (`kill -9`), and
                    // the database is never corrupted; a power cut or kernel crash may lose the
                    // newest commits. FULL at every commit would bound a sweep of thousands of
                    // due jobs by the disk; a database rotation's steps still commit with FULL
                    // (`power_safe` in `queries`). See the README.
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(BUSY_TIMEOUT);
                // No ping before each use: a connection to a local file does not go stale, and
                // the ping is a round trip to the connection's worker thread for every statement.
                let pool_options = SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .test_before_acquire(false);
                (options, pool_options, Some(path), lock)
            }
        };
        let pool = pool_options
            .connect_with(options.foreign_keys(true))
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool, path, lock })
    }
}

impl_store!(
    SqliteStore,
    backend = "sqlite",
    claim_lock = "",
    power_safe = ("PRAGMA synchronous = FULL", "PRAGMA synchronous = NORMAL")
);

fn parse_url(url: &str) -> Result<Location, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Url(format!("`{url}` is not a sqlite: URL")))?;
    // Options in a query string are ours to choose; ignore any the URL carries.
    let path = rest.split('?').next().unwrap_or_default();
    match path {
        "" => Err(StoreError::Url(format!("`{url}` names no database file"))),
        ":memory:" => Ok(Location::Memory),
        path => Ok(Location::File(PathBuf::from(path))),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir)),
        _ => Ok(()),
    }
}

/// Makes sure `path` is readable by its owner only: creates it with 0600 when `create`, and
/// clears the group/other bits of an existing file.
fn secure_file(path: &Path, create: bool) -> Result<(), StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .open(path);
    let file = match file {
        Ok(file) => file,
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path)(e)),
    };
    let mode = file
        .metadata()
        .map_err(io_error(path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(mode & 0o700))
            .map_err(io_error(path))?;
    }
    Ok(())
}

/// Takes the exclusive `flock` on `PATH.lock` without waiting, and writes our pid into it.
fn lock_exclusive(path: &Path) -> Result<File, StoreError> {
    let lock_path = side_file(path, ".lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            // Best effort: the pid is for the message only.
            let _ = file.read_to_string(&mut pid);
            let pid = match pid.trim() {
                "" => "unknown".to_string(),
                pid => pid.to_string(),
            };
            return Err(StoreError::InUse(format!(
                "{} is used by another vault-steward process (pid {pid})",
                path.display()
            )));
        }
        Err(TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
        .map_err(io_error(&lock_path))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("sqlite::memory:").unwrap(), Location::Memory);
        assert_eq!(parse_url("sqlite://:memory:").unwrap(), Location::Memory);
        assert_eq!(
            parse_url("sqlite:///var/lib/vault-steward/state.db").unwrap(),
            Location::File(PathBuf::from("/var/lib/vault-steward/state.db"))
        );
        assert_eq!(
            parse_url("sqlite://state/state.db?mode=rwc").unwrap(),
            Location::File(PathBuf::from("state/state.db"))
        );
        assert_eq!(
            parse_url("sqlite:state.db").unwrap(),
            Location::File(PathBuf::from("state.db"))
        );
        assert!(matches!(parse_url("sqlite://"), Err(StoreError::Url(_))));
        assert!(matches!(parse_url("postgres://x"), Err(StoreError::Url(_))));
    }

    #[test]
    fn side_files() {
        assert_eq!(
            side_file(Path::new("/a/state.db"), ".lock"),
            PathBuf::from("/a/state.db.lock")
        );
    }

    #[tokio::test]
    async fn memory_store_keeps_its_data() {
        use crate::store::{JobState, Store};
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let state = JobState {
            job: "j".into(),
            kind: "api-key".into(),
            ..JobState::default()
        };
        store.put_job_state(&state).await.unwrap();
        assert_eq!(store.job_state("j").await.unwrap(), Some(state));
        assert_eq!(store.backend(), "sqlite");
    }
}
