//! Who this process is, for lock rows, the leader lease, the outbox claimer and alert footers.
//!
//! The host name comes from `uname(2)` (what `gethostname(2)` returns), never from
//! `/proc/sys/kernel/hostname`: the shipped unit's `ProcSubset=pid` hides `/proc/sys`. A holder
//! id is `host:boot:pidns:pid:start:nonce`: the boot id (`-` when `/proc/sys` is hidden), the
//! pid namespace's inode, the pid, the process start time in clock ticks since boot and a random
//! nonce. The nonce alone makes two processes' ids differ (containers sharing a host name and
//! pid 1, a pid and start tick recycled after a reboot), so an equal holder string always means
//! this very process.
//!
//! [`holder_is_dead_here`] must never call a live process dead: it does so only when the holder
//! ran on this host, in this boot and in this pid namespace (all known on both sides) and its
//! pid is gone or now belongs to a process started at another time. Anything it cannot prove
//! (another host, an unreadable boot id, a pid it may not see) leaves the holder alone until its
//! lease runs out.

use std::sync::OnceLock;

/// This host's name as `gethostname(2)` returns it; `localhost` if it is empty.
pub fn hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().trim().to_string();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// The parts of a holder id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`; `None` where `/proc/sys` is hidden.
    pub boot_id: Option<String>,
    /// The inode of `/proc/self/ns/pid`: pids mean something only within one namespace.
    pub pid_ns: Option<u64>,
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot).
    pub start: Option<u64>,
    /// 64 random bits, fresh for every process.
    pub nonce: String,
}

impl Holder {
    /// This process, read once (the boot id and namespace do not change while it lives).
    fn current() -> Holder {
        let pid = std::process::id();
        Holder {
            host: hostname(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|b| b.trim().to_string())
                .filter(|b| !b.is_empty() && !b.contains(':')),
            pid_ns: pid_namespace(),
            pid,
            start: process_start(pid),
            nonce: format!("{:016x}", rand::random::<u64>()),
        }
    }

    /// Parses a holder id; `None` for anything else (such as the `host:pid:start` ids of
    /// earlier versions, which are then left to expire).
    pub fn parse(id: &str) -> Option<Holder> {
        let mut parts = id.rsplitn(6, ':');
        let nonce = parts.next()?;
        let start = parts.next()?;
        let pid = parts.next()?.parse().ok()?;
        let pid_ns = parts.next()?;
        let boot_id = parts.next()?;
        let host = parts.next()?;
        if host.is_empty() || nonce.len() != 16 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let optional = |s: &str| (s != "-").then(|| s.to_string());
        Some(Holder {
            host: host.to_string(),
            boot_id: optional(boot_id),
            pid_ns: optional(pid_ns).map(|n| n.parse()).transpose().ok()?,
            pid,
            start: optional(start).map(|n| n.parse()).transpose().ok()?,
            nonce: nonce.to_string(),
        })
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dash = |o: Option<String>| o.unwrap_or_else(|| "-".to_string());
        write!(
            f,
            "{}:{}:{}:{}:{}:{}",
            self.host,
            dash(self.boot_id.clone()),
            dash(self.pid_ns.map(|n| n.to_string())),
            self.pid,
            dash(self.start.map(|n| n.to_string())),
            self.nonce
        )
    }
}

fn me() -> &'static (Holder, String) {
    static ME: OnceLock<(Holder, String)> = OnceLock::new();
    ME.get_or_init(|| {
        let holder = Holder::current();
        let id = holder.to_string();
        (holder, id)
    })
}

/// This process's holder id (the same string for the whole life of the process).
pub fn holder_id() -> String {
    me().1.clone()
}

fn pid_namespace() -> Option<u64> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let link = link.to_str()?;
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime) counted after the parenthesised command name, which may hold spaces.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// What is known about a local pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PidState {
    /// Running, started at this tick.
    StartedAt(u64),
    /// No such process.
    Gone,
    /// It exists, or we cannot tell (hidden by `ProtectProc=invisible`, no permission).
    Unknown,
}

fn pid_state(pid: u32) -> PidState {
    if let Some(start) = process_start(pid) {
        return PidState::StartedAt(start);
    }
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        // pid 0 (or out of range) names no process.
        return PidState::Gone;
    };
    // kill(pid, 0) tells a missing process (ESRCH) from one we may not see or signal (EPERM).
    match rustix::process::test_kill_process(p) {
        Err(e) if e == rustix::io::Errno::SRCH => PidState::Gone,
        _ => PidState::Unknown,
    }
}

/// Whether `holder` names a process of this host, boot and pid namespace that no longer runs.
pub fn holder_is_dead_here(holder: &str) -> bool {
    let (me, my_id) = me();
    is_dead(me, holder == my_id, holder, pid_state)
}

/// The decision of [`holder_is_dead_here`], with our identity and the pid lookup passed in.
fn is_dead(me: &Holder, is_me: bool, holder: &str, pid_state: impl Fn(u32) -> PidState) -> bool {
    if is_me {
        return false;
    }
    let Some(h) = Holder::parse(holder) else {
        return false;
    };
    let same_boot = me.boot_id.is_some() && h.boot_id == me.boot_id;
    let same_ns = me.pid_ns.is_some() && h.pid_ns == me.pid_ns;
    if h.host != me.host || !same_boot || !same_ns {
        return false;
    }
    match (pid_state(h.pid), h.start) {
        (PidState::Gone, _) => true,
        // The pid now belongs to a process started at another time: ours is gone.
        (PidState::StartedAt(now), Some(then)) => now != then,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(pid: u32, start: u64, nonce: &str) -> Holder {
        Holder {
            host: "db-1.example.com".into(),
            boot_id: Some("70c03f6f-eab3-49ca-b162-db78b9479f58".into()),
            pid_ns: Some(4026531836),
            pid,
            start: Some(start),
            nonce: nonce.into(),
        }
    }

    #[test]
    fn ids_round_trip_and_old_or_odd_ids_do_not_parse() {
        let h = local(42, 123456, "00112233445566ff");
        let id = h.to_string();
        assert_eq!(
            id,
            "db-1.example.com:70c03f6f-eab3-49ca-b162-db78b9479f58:4026531836:42:123456:00112233445566ff"
        );
        assert_eq!(Holder::parse(&id), Some(h));
        let hidden = Holder {
            boot_id: None,
            pid_ns: None,
            start: None,
            ..local(7, 0, "0000000000000001")
        };
        assert_eq!(
            hidden.to_string(),
            "db-1.example.com:-:-:7:-:0000000000000001"
        );
        assert_eq!(Holder::parse(&hidden.to_string()), Some(hidden));
        // A host name with a colon stays whole (parsed from the right).
        let odd = Holder {
            host: "a:b".into(),
            ..local(1, 2, "0000000000000003")
        };
        assert_eq!(Holder::parse(&odd.to_string()), Some(odd));
        for bad in [
            "unknown:123:456",
            "host:boot:1:2:3:nothex-nothex-00",
            "host:boot:ns:2:3:0000000000000003",
            ":boot:1:2:3:0000000000000003",
            "",
        ] {
            assert_eq!(Holder::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn this_process_is_named_after_its_real_host_and_differs_from_a_twin() {
        let id = holder_id();
        assert_eq!(id, holder_id(), "one id for the whole process");
        let me = Holder::parse(&id).expect("our own id parses");
        assert_eq!(me.host, hostname());
        assert_ne!(me.host, "unknown");
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.start, process_start(std::process::id()));
        // A second process in a twin container: same host, pid and start tick; only the nonce
        // differs, and the ids are not equal.
        let twin = Holder::current();
        assert_ne!(twin.to_string(), id);
    }

    #[test]
    fn only_a_holder_of_this_host_boot_and_namespace_whose_pid_is_gone_is_dead() {
        let me = local(100, 5000, "aaaaaaaaaaaaaaaa");
        let gone = |_| PidState::Gone;
        let dead = |h: &Holder, state: &dyn Fn(u32) -> PidState| {
            is_dead(&me, false, &h.to_string(), state)
        };
        // Same host, boot and namespace, pid gone: dead.
        assert!(dead(&local(200, 6000, "bbbbbbbbbbbbbbbb"), &gone));
        // The pid runs a process started at another tick: recycled, so dead.
        assert!(dead(&local(200, 6000, "bbbbbbbbbbbbbbbb"), &|_| {
            PidState::StartedAt(7000)
        }));
        // The same process still runs: alive.
        assert!(!dead(&local(200, 6000, "bbbbbbbbbbbbbbbb"), &|_| {
            PidState::StartedAt(6000)
        }));
        // A pid we may not see (ProtectProc=invisible): never dead.
        assert!(!dead(&local(200, 6000, "bbbbbbbbbbbbbbbb"), &|_| {
            PidState::Unknown
        }));
        // Another boot, an unknown boot on either side, another pid namespace (a container
        // with the same host name) or another host: never dead, whatever the pid lookup says.
        let other_boot = Holder {
            boot_id: Some("11111111-2222-3333-4444-555555555555".into()),
            ..local(200, 6000, "bbbbbbbbbbbbbbbb")
        };
        let no_boot = Holder {
            boot_id: None,
            ..local(200, 6000, "bbbbbbbbbbbbbbbb")
        };
        let other_ns = Holder {
            pid_ns: Some(4026532175),
            ..local(200, 6000, "bbbbbbbbbbbbbbbb")
        };
        let other_host = Holder {
            host: "db-2.example.com".into(),
            ..local(200, 6000, "bbbbbbbbbbbbbbbb")
        };
        for h in [&other_boot, &no_boot, &other_ns, &other_host] {
            assert!(!dead(h, &gone), "{h}");
        }
        let me_hidden = Holder {
            boot_id: None,
            ..me.clone()
        };
        let same = local(200, 6000, "bbbbbbbbbbbbbbbb").to_string();
        assert!(!is_dead(&me_hidden, false, &same, gone));
        // Our own id, and ids we cannot parse (earlier versions): never dead.
        assert!(!is_dead(&me, true, &me.to_string(), gone));
        assert!(!is_dead(&me, false, "db-1.example.com:200:6000", gone));
    }

    #[test]
    fn real_pid_lookups() {
        let pid = std::process::id();
        assert_eq!(
            pid_state(pid),
            PidState::StartedAt(process_start(pid).unwrap())
        );
        assert_eq!(pid_state(0), PidState::Gone);
        // The largest pid Linux can hand out is 2^22; this one cannot exist.
        assert_eq!(pid_state(i32::MAX as u32), PidState::Gone);
        assert!(!holder_is_dead_here(&holder_id()));
    }
}
