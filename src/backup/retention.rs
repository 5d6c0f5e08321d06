//! Which snapshots to prune (pure; the destinations do the listing and deleting).
//!
//! Only snapshots whose manifest names this job count ("ours"); anything else under the prefix
//! — other files, look-alike names, snapshots of another job, snapshots without a manifest — is
//! never deleted. Of ours, the newest `min_keep` always stay; the rest go once their manifest's
//! `taken_at` is older than `retain`. A manifest of ours whose snapshot is gone (a crash between
//! writing the manifest and publishing) goes once it is older than `retain`. Retention runs only
//! after a fully successful run; the caller enforces that.

use chrono::{DateTime, Utc};

/// A snapshot (or orphan manifest) of ours, by name and manifest time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dated {
    pub name: String,
    pub taken_at: DateTime<Utc>,
}

/// What to delete and what stays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Snapshots to delete (each with its manifest), oldest first.
    pub delete: Vec<String>,
    /// Manifests whose snapshot is gone, to delete.
    pub delete_orphans: Vec<String>,
    /// Snapshots of ours that stay, newest first.
    pub keep: Vec<Dated>,
}

/// Decides what to prune among `ours` (snapshots with a manifest naming the job) and
/// `orphans` (manifests of ours without a snapshot).
pub fn plan(
    mut ours: Vec<Dated>,
    orphans: Vec<Dated>,
    now: DateTime<Utc>,
    retain: chrono::Duration,
    min_keep: usize,
) -> Plan {
    let cutoff = now - retain;
    // Newest first; ties broken by name so the plan is deterministic.
    ours.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then(b.name.cmp(&a.name)));
    let mut plan = Plan::default();
    for (i, s) in ours.into_iter().enumerate() {
        if i >= min_keep && s.taken_at < cutoff {
            plan.delete.push(s.name);
        } else {
            plan.keep.push(s);
        }
    }
    plan.delete.reverse();
    plan.delete_orphans = orphans
        .into_iter()
        .filter(|o| o.taken_at < cutoff)
        .map(|o| o.name)
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn d(name: &str, secs: i64) -> Dated {
        Dated {
            name: name.into(),
            taken_at: at(secs),
        }
    }

    #[test]
    fn old_ones_go_but_min_keep_holds() {
        let ours = vec![d("a", 0), d("b", 100), d("c", 200), d("d", 990)];
        // now = 1000, retain 50s: only d is young; min_keep 2 keeps c as well.
        let p = plan(ours, vec![], at(1000), chrono::Duration::seconds(50), 2);
        assert_eq!(p.delete, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(p.keep, vec![d("d", 990), d("c", 200)]);
    }

    #[test]
    fn everything_young_stays_and_min_keep_covers_all_old() {
        let ours = vec![d("a", 0), d("b", 100)];
        let p = plan(
            ours.clone(),
            vec![],
            at(120),
            chrono::Duration::seconds(500),
            1,
        );
        assert!(p.delete.is_empty());
        let p = plan(ours, vec![], at(10_000), chrono::Duration::seconds(1), 5);
        assert!(p.delete.is_empty());
        assert_eq!(p.keep.len(), 2);
    }

    #[test]
    fn orphan_manifests_go_when_old() {
        let p = plan(
            vec![d("a", 1000)],
            vec![d("old.json", 0), d("new.json", 990)],
            at(1000),
            chrono::Duration::seconds(50),
            1,
        );
        assert_eq!(p.delete_orphans, vec!["old.json".to_string()]);
        assert!(p.delete.is_empty());
    }

    #[test]
    fn many_snapshots() {
        let ours: Vec<Dated> = (0..1100).map(|i| d(&format!("s{i:04}"), i)).collect();
        let p = plan(ours, vec![], at(2000), chrono::Duration::seconds(10), 3);
        assert_eq!(p.keep.len(), 3);
        assert_eq!(p.delete.len(), 1097);
        assert_eq!(p.delete[0], "s0000");
        assert_eq!(p.keep[0].name, "s1099");
    }
}
