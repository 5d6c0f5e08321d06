//! What a destination holds, and pruning it.
//!
//! A catalog pairs every snapshot named like ours with its manifest (read with bounded
//! concurrency), through listings of any length. Pruning applies [`super::retention::plan`] to
//! the snapshots whose manifest names the job, deleting each snapshot before its manifest (a crash
//! in between leaves an orphan manifest, which a later run removes).

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::manifest::Manifest;
use super::pipeline::Destinations;
use super::retention::{self, Dated};
use super::s3::CONCURRENCY;
use super::{BackupError, LOCAL, S3, manifest_name, manifest_snapshot, parse_snapshot_name};

/// One snapshot in one destination.
#[derive(Debug, Clone)]
pub struct Item {
    pub destination: &'static str,
    /// `vault-YYYYMMDD-HHMMSS.snap.age`.
    pub name: String,
    /// The object key (S3) or path (local), as the store records it.
    pub key: String,
    /// `s3://…` or the path.
    pub location: String,
    /// Size of the encrypted object.
    pub size: u64,
    /// Its manifest, if one exists and parses.
    pub manifest: Option<Manifest>,
}

impl Item {
    /// Whether the manifest says `job` took this snapshot.
    pub fn is_of(&self, job: &str) -> bool {
        self.manifest
            .as_ref()
            .is_some_and(|m| m.names(job, &self.name))
    }

    /// The manifest's time, else the one in the name.
    pub fn taken_at(&self) -> DateTime<Utc> {
        self.manifest
            .as_ref()
            .map(|m| m.taken_at)
            .or_else(|| parse_snapshot_name(&self.name))
            .unwrap_or_default()
    }
}

/// A destination's snapshots (newest first) and the manifests without a snapshot.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub items: Vec<Item>,
    pub orphans: Vec<(String, Option<Manifest>)>,
}

impl Destinations {
    /// The labels of the configured destinations.
    pub fn labels(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.s3.is_some() {
            out.push(S3);
        }
        if self.local.is_some() {
            out.push(LOCAL);
        }
        out
    }

    /// What `destination` holds.
    pub async fn catalog(&self, destination: &str) -> Result<Catalog, BackupError> {
        let (snapshots, manifests) = match (destination, &self.s3, &self.local) {
            (S3, Some(s3), _) => {
                let l = s3.list().await?;
                (
                    l.snapshots
                        .into_iter()
                        .map(|f| (f.name, f.size))
                        .collect::<Vec<_>>(),
                    l.manifests.into_iter().map(|f| f.name).collect::<Vec<_>>(),
                )
            }
            (LOCAL, _, Some(local)) => {
                let l = local.list()?;
                (
                    l.snapshots.into_iter().map(|f| (f.name, f.size)).collect(),
                    l.manifests.into_iter().map(|f| f.name).collect(),
                )
            }
            _ => {
                return Err(BackupError::Usage(format!(
                    "this job has no {destination} destination"
                )));
            }
        };
        let manifest_set: std::collections::HashSet<&str> =
            manifests.iter().map(String::as_str).collect();
        let snapshot_set: std::collections::HashSet<&str> =
            snapshots.iter().map(|(n, _)| n.as_str()).collect();
        let to_read: Vec<String> = snapshots
            .iter()
            .map(|(n, _)| manifest_name(n))
            .filter(|m| manifest_set.contains(m.as_str()))
            .chain(
                manifests
                    .iter()
                    .filter(|m| manifest_snapshot(m).is_some_and(|s| !snapshot_set.contains(s)))
                    .cloned(),
            )
            .collect();
        let read: Vec<(String, Result<Option<Manifest>, BackupError>)> =
            futures::stream::iter(to_read)
                .map(|m| async move {
                    let got = self.read_manifest(destination, &m).await;
                    (m, got)
                })
                .buffered(CONCURRENCY)
                .collect()
                .await;
        let mut found = std::collections::HashMap::new();
        for (name, got) in read {
            found.insert(name, got?);
        }
        let mut items: Vec<Item> = snapshots
            .into_iter()
            .map(|(name, size)| {
                let manifest = found.remove(&manifest_name(&name)).flatten();
                let (key, location) = self.address(destination, &name);
                Item {
                    destination: if destination == S3 { S3 } else { LOCAL },
                    name,
                    key,
                    location,
                    size,
                    manifest,
                }
            })
            .collect();
        items.sort_by(|a, b| {
            b.taken_at()
                .cmp(&a.taken_at())
                .then_with(|| b.name.cmp(&a.name))
        });
        let orphans = found.into_iter().collect();
        Ok(Catalog { items, orphans })
    }

    /// The store key and the display location of `name` in `destination`.
    pub fn address(&self, destination: &str, name: &str) -> (String, String) {
        match (destination, &self.s3, &self.local) {
            (S3, Some(s3), _) => (s3.key(name), s3.location(name)),
            (_, _, Some(local)) => {
                let p = local.path(name).display().to_string();
                (p.clone(), p)
            }
            _ => (name.to_string(), name.to_string()),
        }
    }

    async fn read_manifest(
        &self,
        destination: &str,
        name: &str,
    ) -> Result<Option<Manifest>, BackupError> {
        match (destination, &self.s3, &self.local) {
            (S3, Some(s3), _) => s3.read_manifest(name).await,
            (_, _, Some(local)) => local.read_manifest(name),
            _ => Ok(None),
        }
    }

    async fn delete(&self, destination: &str, name: &str) -> Result<(), BackupError> {
        match (destination, &self.s3, &self.local) {
            (S3, Some(s3), _) => s3.delete(name).await,
            (_, _, Some(local)) => local.delete(name),
            _ => Ok(()),
        }
    }

    /// Prunes `destination` for `job`; returns how many snapshots were deleted and the job's
    /// snapshots that stay (newest first).
    pub async fn prune(
        &self,
        destination: &str,
        job: &str,
        now: DateTime<Utc>,
        retain: chrono::Duration,
        min_keep: usize,
    ) -> Result<(usize, Vec<Item>), BackupError> {
        let catalog = self.catalog(destination).await?;
        let ours: Vec<Dated> = catalog
            .items
            .iter()
            .filter(|i| i.is_of(job))
            .map(|i| Dated {
                name: i.name.clone(),
                taken_at: i.taken_at(),
            })
            .collect();
        let orphans: Vec<Dated> = catalog
            .orphans
            .iter()
            .filter_map(|(name, m)| {
                let m = m.as_ref()?;
                let snapshot = manifest_snapshot(name)?;
                m.names(job, snapshot).then(|| Dated {
                    name: name.clone(),
                    taken_at: m.taken_at,
                })
            })
            .collect();
        let plan = retention::plan(ours, orphans, now, retain, min_keep);
        let deleted = plan.delete.len();
        let deletions: Vec<Result<(), BackupError>> = futures::stream::iter(plan.delete.clone())
            .map(|name: String| async move {
                self.delete(destination, &name).await?;
                self.delete(destination, &manifest_name(&name)).await
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for orphan in &plan.delete_orphans {
            self.delete(destination, orphan).await?;
        }
        deletions.into_iter().collect::<Result<(), BackupError>>()?;
        if destination == LOCAL
            && let Some(local) = &self.local
            && deleted > 0
        {
            local.sync_dir()?;
        }
        let keep: std::collections::HashSet<&str> =
            plan.keep.iter().map(|d| d.name.as_str()).collect();
        let kept = catalog
            .items
            .into_iter()
            .filter(|i| keep.contains(i.name.as_str()) && i.is_of(job))
            .collect();
        Ok((deleted, kept))
    }
}
