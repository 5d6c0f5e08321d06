//! The in-process models the simulation runs the protocols against: KV v2 (versions,
//! check-and-set, soft delete, metadata with `custom_metadata`, delete of everything), a
//! database (roles, passwords, a password-reuse policy) and AppRole (secret-ids with accessors
//! and metadata, destroy, login). Each model call is one atomic step: what the protocol sees of
//! faults (a lost answer, a refusal, a crash) is decided around it by the scheduler in
//! [`super`]. The models also check the invariants that must hold at the moment of an effect
//! (I3: no pending password deleted while the role holds it; no destroyed secret-id published).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::store::RotationStatus;
use crate::vault::{KvData, KvMetadata, KvSecret, KvVersionMeta, KvWrite, VaultError};

/// One KV v2 version.
struct Version {
    data: BTreeMap<String, String>,
    created: DateTime<Utc>,
    deleted: bool,
}

/// One KV v2 secret: its versions and metadata.
struct Entry {
    versions: BTreeMap<u64, Version>,
    current: u64,
    custom: BTreeMap<String, String>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
}

/// KV version 2, as Vault keeps it.
#[derive(Default)]
pub(super) struct Kv {
    entries: BTreeMap<String, Entry>,
}

impl Kv {
    /// The fields of the current version, if it is readable.
    pub(super) fn current(&self, path: &str) -> Option<(u64, &BTreeMap<String, String>)> {
        let entry = self.entries.get(path)?;
        let version = entry.versions.get(&entry.current)?;
        (!version.deleted).then_some((entry.current, &version.data))
    }

    pub(super) fn read(&self, path: &str) -> Option<KvSecret> {
        let current = self.entries.get(path)?.current;
        self.read_version(path, current)
    }

    pub(super) fn read_version(&self, path: &str, number: u64) -> Option<KvSecret> {
        let entry = self.entries.get(path)?;
        let version = entry.versions.get(&number)?;
        if version.deleted {
            return None;
        }
        Some(KvSecret {
            data: version
                .data
                .iter()
                .map(|(k, v)| (k.clone(), SecretString::from(v.as_str())))
                .collect(),
            version: number,
            created_time: version.created,
            custom_metadata: Some(entry.custom.clone()),
        })
    }

    pub(super) fn metadata(&self, path: &str) -> Option<KvMetadata> {
        let entry = self.entries.get(path)?;
        Some(KvMetadata {
            current_version: entry.current,
            oldest_version: entry.versions.keys().next().copied().unwrap_or(0),
            created_time: entry.created,
            updated_time: entry.updated,
            custom_metadata: entry.custom.clone(),
            versions: entry
                .versions
                .iter()
                .map(|(n, v)| {
                    let meta = KvVersionMeta {
                        created_time: v.created,
                        deletion_time: v.deleted.then_some(v.created),
                        destroyed: false,
                    };
                    (*n, meta)
                })
                .collect(),
        })
    }

    /// A new version; `cas` as Vault reads it (`Some(0)`: only if nothing is there), `None`
    /// for a write without check-and-set (a human with the CLI).
    pub(super) fn write(
        &mut self,
        path: &str,
        data: BTreeMap<String, String>,
        cas: Option<u64>,
        at: DateTime<Utc>,
    ) -> Result<KvWrite, VaultError> {
        let current = self.entries.get(path).map(|e| e.current).unwrap_or(0);
        if let Some(cas) = cas
            && cas != current
        {
            return Err(VaultError::CasMismatch {
                path: path.to_string(),
                expected: cas,
            });
        }
        let entry = self
            .entries
            .entry(path.to_string())
            .or_insert_with(|| Entry {
                versions: BTreeMap::new(),
                current: 0,
                custom: BTreeMap::new(),
                created: at,
                updated: at,
            });
        entry.current += 1;
        entry.updated = at;
        entry.versions.insert(
            entry.current,
            Version {
                data,
                created: at,
                deleted: false,
            },
        );
        Ok(KvWrite {
            version: entry.current,
            created_time: at,
        })
    }

    pub(super) fn set_custom(&mut self, path: &str, custom: BTreeMap<String, String>) {
        let now = Utc::now();
        let entry = self
            .entries
            .entry(path.to_string())
            .or_insert_with(|| Entry {
                versions: BTreeMap::new(),
                current: 0,
                custom: BTreeMap::new(),
                created: now,
                updated: now,
            });
        entry.custom = custom;
        entry.updated = now;
    }

    pub(super) fn delete_all(&mut self, path: &str) {
        self.entries.remove(path);
    }
}

/// One database role.
struct Role {
    password: String,
    /// Earlier passwords, oldest first.
    history: Vec<String>,
}

/// A database: roles and a password-reuse policy (MySQL `password_history`, MariaDB
/// `password_reuse_check`): a password among the role's last `reuse` ones, the current one
/// included, is refused.
pub(super) struct Db {
    roles: BTreeMap<String, Role>,
    pub(super) reuse: usize,
}

impl Db {
    pub(super) fn new(roles: &[(&str, &str)], reuse: usize) -> Self {
        Db {
            roles: roles
                .iter()
                .map(|(name, password)| {
                    let role = Role {
                        password: password.to_string(),
                        history: Vec::new(),
                    };
                    (name.to_string(), role)
                })
                .collect(),
            reuse,
        }
    }

    pub(super) fn set_password(&mut self, user: &str, password: &str) -> Result<(), String> {
        let reuse = self.reuse;
        let role = self
            .roles
            .get_mut(user)
            .ok_or_else(|| format!("role {user} does not exist"))?;
        let recent = std::iter::once(&role.password).chain(role.history.iter().rev());
        if reuse > 0 && recent.take(reuse).any(|p| p == password) {
            return Err(format!("password reuse refused for {user}"));
        }
        let old = std::mem::replace(&mut role.password, password.to_string());
        role.history.push(old);
        Ok(())
    }

    /// What an admin can do by hand, whatever the policy.
    pub(super) fn force_password(&mut self, user: &str, password: &str) {
        if let Some(role) = self.roles.get_mut(user) {
            let old = std::mem::replace(&mut role.password, password.to_string());
            role.history.push(old);
        }
    }

    pub(super) fn logs_in(&self, user: &str, password: &str) -> bool {
        self.roles.get(user).is_some_and(|r| r.password == password)
    }
}

/// One secret-id of the role.
struct SecretId {
    secret_id: String,
    metadata: BTreeMap<String, String>,
    live: bool,
}

/// One AppRole role and its secret-ids, by accessor.
pub(super) struct AppRole {
    pub(super) role_id: String,
    ids: BTreeMap<String, SecretId>,
    next: u64,
}

impl AppRole {
    pub(super) fn new(role_id: &str) -> Self {
        AppRole {
            role_id: role_id.to_string(),
            ids: BTreeMap::new(),
            next: 0,
        }
    }

    /// Returns (secret-id, accessor).
    pub(super) fn issue(&mut self, metadata: BTreeMap<String, String>) -> (String, String) {
        self.next += 1;
        let (secret_id, accessor) = (format!("sid-{}", self.next), format!("acc-{}", self.next));
        self.ids.insert(
            accessor.clone(),
            SecretId {
                secret_id: secret_id.clone(),
                metadata,
                live: true,
            },
        );
        (secret_id, accessor)
    }

    pub(super) fn accessor_of(&self, secret_id: &str) -> Option<String> {
        self.ids
            .iter()
            .find(|(_, s)| s.live && s.secret_id == secret_id)
            .map(|(a, _)| a.clone())
    }

    pub(super) fn accessors(&self) -> Vec<String> {
        self.ids
            .iter()
            .filter(|(_, s)| s.live)
            .map(|(a, _)| a.clone())
            .collect()
    }

    pub(super) fn metadata(&self, accessor: &str) -> Option<BTreeMap<String, String>> {
        self.ids
            .get(accessor)
            .filter(|s| s.live)
            .map(|s| s.metadata.clone())
    }

    pub(super) fn destroy(&mut self, accessor: &str) {
        if let Some(s) = self.ids.get_mut(accessor) {
            s.live = false;
        }
    }

    pub(super) fn logs_in(&self, role_id: &str, secret_id: &str) -> bool {
        role_id == self.role_id
            && self
                .ids
                .values()
                .any(|s| s.live && s.secret_id == secret_id)
    }
}

/// Which protocol a schedule drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Database,
    Approle,
}

/// Everything outside the protocol code: the models, what the store wrapper saw of rotations,
/// what the runs reported, and the invariant violations found so far.
pub(super) struct World {
    pub(super) kind: Kind,
    pub(super) kv: Kv,
    pub(super) db: Db,
    pub(super) approle: AppRole,
    /// The consumers' secret.
    pub(super) consumer: String,
    /// Where the database protocol keeps its pending password.
    pub(super) pending: String,
    /// The store's rotation and action tables, for the seeds that do not use the real store.
    pub(super) tables: super::store::Tables,
    /// Rotations begun and not closed (as the store recorded them).
    pub(super) open: BTreeSet<i64>,
    pub(super) closed: BTreeMap<i64, RotationStatus>,
    /// Rotations closed as finished, and runs that reported `Work::Done`.
    pub(super) finished: u64,
    pub(super) done_reports: u64,
    /// The last state each alert was signalled in.
    pub(super) alerts: BTreeMap<&'static str, bool>,
    pub(super) violations: Vec<String>,
    /// The schedule, step by step (kept when replaying one seed).
    pub(super) trace: Option<Vec<String>>,
}

impl World {
    pub(super) fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(line());
        }
    }

    pub(super) fn violation(&mut self, text: String) {
        self.note(|| format!("VIOLATION {text}"));
        if !self.violations.contains(&text) {
            self.violations.push(text);
        }
    }

    /// Whether `data` (a consumers' or pending secret) holds a credential the target takes.
    pub(super) fn logs_in(&self, data: &BTreeMap<String, String>) -> bool {
        match self.kind {
            Kind::Database => match (data.get("username"), data.get("password")) {
                (Some(u), Some(p)) => self.db.logs_in(u, p),
                _ => false,
            },
            Kind::Approle => match (data.get("role_id"), data.get("secret_id")) {
                (Some(r), Some(s)) => self.approle.logs_in(r, s),
                _ => false,
            },
        }
    }

    /// The protocol's KV write (check-and-set always), with the checks at the moment of the
    /// effect.
    pub(super) fn kv_write(
        &mut self,
        path: &str,
        data: &KvData,
        cas: u64,
    ) -> Result<KvWrite, VaultError> {
        let plain: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| {
                let text = match v.as_secret() {
                    Some(secret) => secret.expose_secret().to_string(),
                    None => v.to_json().to_string(),
                };
                (k.clone(), text)
            })
            .collect();
        if path == self.pending && self.kind == Kind::Database {
            let current = self.kv.current(path).map(|(v, _)| v).unwrap_or(0);
            if current == cas {
                self.check_pending_loss("overwritten");
            }
        }
        let written = self.kv.write(path, plain.clone(), Some(cas), Utc::now())?;
        if path == self.consumer
            && self.kind == Kind::Approle
            && plain.contains_key("secret_id")
            && !self.logs_in(&plain)
        {
            self.violation(format!(
                "I3: a dead secret-id was published at {path} version {}",
                written.version
            ));
        }
        Ok(written)
    }

    pub(super) fn kv_delete_all(&mut self, path: &str) {
        if path == self.pending && self.kind == Kind::Database {
            self.check_pending_loss("deleted");
        }
        self.kv.delete_all(path);
    }

    /// I3: the pending password must not go while the target holds it, KV points consumers at
    /// the target, and KV holds another password. (A pending password for a role KV does not
    /// point at — `alternating` — is nobody's credential: the next rotation sets a new one.)
    fn check_pending_loss(&mut self, how: &str) {
        let Some((_, pending)) = self.kv.current(&self.pending) else {
            return;
        };
        let (Some(user), Some(password)) = (pending.get("username"), pending.get("password"))
        else {
            return;
        };
        if !self.db.logs_in(user, password) {
            return;
        }
        let consumer = self.kv.current(&self.consumer).map(|(_, d)| d);
        let points_here = consumer.and_then(|d| d.get("username")) == Some(user);
        let holds_it = consumer.and_then(|d| d.get("password")) == Some(password);
        if points_here && !holds_it {
            let user = user.clone();
            self.violation(format!(
                "I3: the pending password was {how} while role {user} holds it and KV holds another"
            ));
        }
    }

    pub(super) fn approle_destroy(&mut self, accessor: &str) {
        let published = self
            .kv
            .current(&self.consumer)
            .and_then(|(_, d)| d.get("secret_id_accessor"))
            .is_some_and(|a| a == accessor);
        if published && self.approle.metadata(accessor).is_some() {
            self.violation(format!(
                "I3: secret-id {accessor} was destroyed while KV publishes it"
            ));
        }
        self.approle.destroy(accessor);
    }

    /// I2 (and I1 between rotations), checked at every step: consumers' credential in KV logs
    /// in, or — while a database rotation is open — the pending one does.
    pub(super) fn check_credentials(&mut self, when: &str) {
        let kv_ok = self
            .kv
            .current(&self.consumer)
            .is_some_and(|(_, d)| self.logs_in(d));
        if kv_ok {
            return;
        }
        let pending_ok = self.kind == Kind::Database
            && self
                .kv
                .current(&self.pending)
                .is_some_and(|(_, d)| self.logs_in(d));
        if self.open.is_empty() {
            self.violation(format!(
                "I1: no rotation is open and KV's credential is refused ({when})"
            ));
        } else if !pending_ok {
            self.violation(format!(
                "I2: a rotation is open and neither KV's nor the pending credential logs in ({when})"
            ));
        }
    }

    /// A human writes the consumers' secret without check-and-set: either a field beside the
    /// credential, or (`rotate`) a credential of their own, set on the target first.
    pub(super) fn hand_write(&mut self, n: u64, rotate: bool) {
        let mut data = self
            .kv
            .current(&self.consumer)
            .map(|(_, d)| d.clone())
            .unwrap_or_default();
        if rotate {
            match self.kind {
                Kind::Database => {
                    let user = data.get("username").cloned().unwrap_or_default();
                    let password = format!("by-hand-{n}");
                    self.db.force_password(&user, &password);
                    data.insert("password".into(), password);
                }
                Kind::Approle => {
                    let metadata = BTreeMap::from([("issued_by".into(), "a human".into())]);
                    let (secret_id, accessor) = self.approle.issue(metadata);
                    data.insert("role_id".into(), self.approle.role_id.clone());
                    data.insert("secret_id".into(), secret_id);
                    data.insert("secret_id_accessor".into(), accessor);
                }
            }
        } else {
            data.insert("note".into(), format!("hand edit {n}"));
        }
        let consumer = self.consumer.clone();
        let _ = self.kv.write(&consumer, data, None, Utc::now());
    }
}
