//! Keeping the token alive: when to renew, when to log in again, how long to back off.
//!
//! The timing is pure ([`plan`], [`backoff`]) and the loop ([`drive`]) runs against the small
//! [`TokenOps`] trait, so both are tested here with paused tokio time and a fake Vault. All times
//! are `tokio::time::Instant`s for the same reason.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::VaultError;

/// First retry delay while Vault is unreachable or refuses to log us in.
pub(crate) const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Shortest time between two steps on the same lease, so a token that is about to die (or one
/// that cannot be renewed) is not polled in a tight loop.
pub(crate) const MIN_DELAY: Duration = Duration::from_millis(200);

/// What Vault last told us about the current token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// When we learnt it (login, lookup or renewal).
    pub obtained: Instant,
    /// `None`: the token never expires (root tokens, TTL 0).
    pub expires: Option<Instant>,
    pub renewable: bool,
    /// The last renewal granted less than the token's full TTL: it is up against its max TTL
    /// and only a new login gives a token with a future.
    pub capped: bool,
}

impl Lease {
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }
}

/// The next thing the keep-alive loop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Renew,
    /// AppRole: log in again. Token method: re-read the token source and look the token up.
    Login,
    /// Nothing until the token changes (it never expires).
    Idle,
}

/// What to do for `lease` (`None`: no valid token), and when.
pub(crate) fn plan(lease: Option<&Lease>, now: Instant) -> (Step, Instant) {
    let Some(lease) = lease else {
        return (Step::Login, now);
    };
    let Some(expires) = lease.expires else {
        return (Step::Idle, now);
    };
    if lease.capped {
        return (Step::Login, now);
    }
    if now >= expires {
        // Not sooner than MIN_DELAY after learning it: a token source re-read that returns the
        // same dying token (lookup says TTL 0) must not turn into a tight loop.
        return (Step::Login, now.max(lease.obtained + MIN_DELAY));
    }
    // Renew at two thirds of the lifetime: a third of the TTL is left for retries.
    let lifetime = expires.saturating_duration_since(lease.obtained);
    let at = lease.obtained + (lifetime * 2 / 3).max(MIN_DELAY);
    let step = if lease.renewable {
        Step::Renew
    } else {
        Step::Login
    };
    (step, at)
}

/// The delay before retry number `failures` (1-based): doubling from [`BACKOFF_INITIAL`] up to
/// [`BACKOFF_MAX`], then scaled into its upper half by `jitter` (0..1) so many daemons that lost
/// Vault together do not come back in lockstep.
pub(crate) fn backoff(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = BACKOFF_INITIAL
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_MAX);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// What the loop needs from a session.
pub(crate) trait TokenOps {
    /// The current lease, `None` when there is no valid token.
    fn lease(&self) -> Option<Lease>;
    /// Notified (`notify_waiters`) whenever a login elsewhere replaced the token.
    fn changed(&self) -> &Notify;
    fn renew_token(&self) -> impl Future<Output = Result<(), VaultError>> + Send;
    fn relogin(&self) -> impl Future<Output = Result<(), VaultError>> + Send;
}

#[derive(PartialEq, Eq)]
enum Wake {
    Due,
    Changed,
}

/// Runs until `cancel`: renews at two thirds of the TTL; logs in again when the token is capped
/// by its max TTL, not renewable, refused or expired; backs off with jitter while that fails.
pub(crate) async fn drive<O: TokenOps>(ops: &O, cancel: &CancellationToken) {
    let mut failures = 0u32;
    let mut not_before: Option<Instant> = None;
    let mut force_login = false;
    loop {
        // Registered before reading the lease, so a login racing with this read still wakes us.
        let changed = ops.changed().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();

        let now = Instant::now();
        let (mut step, mut at) = plan(ops.lease().as_ref(), now);
        if force_login {
            (step, at) = (Step::Login, now);
        }
        if let Some(earliest) = not_before {
            at = at.max(earliest);
        }

        let wake = if step == Step::Idle {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut changed => Wake::Changed,
            }
        } else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut changed => Wake::Changed,
                _ = tokio::time::sleep_until(at) => Wake::Due,
            }
        };
        if wake == Wake::Changed {
            failures = 0;
            not_before = None;
            force_login = false;
            continue;
        }

        // A backoff may have outlived the token: renewing it is pointless then.
        if step == Step::Renew
            && ops
                .lease()
                .is_none_or(|lease| lease.is_expired(Instant::now()))
        {
            step = Step::Login;
        }

        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            result = async {
                match step {
                    Step::Renew => ops.renew_token().await,
                    _ => ops.relogin().await,
                }
            } => result,
        };
        match result {
            Ok(()) => {
                if failures > 0 || force_login {
                    tracing::info!(?step, "vault token is valid again");
                }
                failures = 0;
                not_before = None;
                force_login = false;
            }
            Err(err) if step == Step::Renew && !matches!(err, VaultError::Unreachable(_)) => {
                // Revoked, expired or not renewable: only a new login helps, and at once.
                tracing::warn!(error = %err, "vault refused to renew the token; logging in again");
                force_login = true;
                not_before = None;
            }
            Err(err) => {
                failures += 1;
                let delay = backoff(failures, rand::random::<f64>());
                tracing::warn!(
                    error = %err,
                    ?step,
                    failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "vault token upkeep failed"
                );
                not_before = Some(Instant::now() + delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn lease(obtained: Instant, ttl: Option<f64>, renewable: bool, capped: bool) -> Lease {
        Lease {
            obtained,
            expires: ttl.map(|t| obtained + secs(t)),
            renewable,
            capped,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn plan_follows_the_lease() {
        let t0 = Instant::now();
        assert_eq!(plan(None, t0), (Step::Login, t0));
        assert_eq!(plan(Some(&lease(t0, None, false, false)), t0).0, Step::Idle);
        assert_eq!(
            plan(Some(&lease(t0, Some(30.0), true, false)), t0),
            (Step::Renew, t0 + secs(20.0))
        );
        // Not renewable: log in again at the same point.
        assert_eq!(
            plan(Some(&lease(t0, Some(30.0), false, false)), t0),
            (Step::Login, t0 + secs(20.0))
        );
        // Capped by max TTL: log in again now.
        assert_eq!(
            plan(Some(&lease(t0, Some(2.0), true, true)), t0),
            (Step::Login, t0)
        );
        // Expired: log in.
        let later = t0 + secs(31.0);
        assert_eq!(
            plan(Some(&lease(t0, Some(30.0), true, false)), later),
            (Step::Login, later)
        );
        // A token that was already dead when looked up is not looked up again at once.
        assert_eq!(
            plan(Some(&lease(t0, Some(0.0), true, false)), t0),
            (Step::Login, t0 + MIN_DELAY)
        );
        // A tiny TTL is not polled in a tight loop.
        assert_eq!(
            plan(Some(&lease(t0, Some(0.05), false, false)), t0),
            (Step::Login, t0 + MIN_DELAY)
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        assert_eq!(backoff(1, 1.0), secs(1.0));
        assert_eq!(backoff(1, 0.0), secs(0.5));
        assert_eq!(backoff(2, 1.0), secs(2.0));
        assert_eq!(backoff(3, 0.5), secs(3.0));
        assert_eq!(backoff(6, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(1000, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(1000, 0.0), BACKOFF_MAX / 2);
    }

    /// How the fake answers one call.
    #[derive(Clone, Copy, Debug)]
    enum Answer {
        Ok,
        Unreachable,
        Refused,
    }

    /// A fake Vault: logins grant `ttl`, renewals extend to `ttl` but never past `max_ttl` from
    /// the login; a renewal of an expired lease is refused. Scripted answers come first.
    struct Fake {
        start: Instant,
        ttl: Duration,
        max_ttl: Option<Duration>,
        changed: Notify,
        state: Mutex<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        lease: Option<Lease>,
        login_at: Option<Instant>,
        renew_script: VecDeque<Answer>,
        login_script: VecDeque<Answer>,
        /// Every call in this window of seconds since the start answers `Unreachable`.
        outage: Option<(f64, f64)>,
        calls: Vec<(Step, f64)>,
    }

    impl Fake {
        fn new(ttl: f64, max_ttl: Option<f64>) -> Arc<Fake> {
            Arc::new(Fake {
                start: Instant::now(),
                ttl: secs(ttl),
                max_ttl: max_ttl.map(secs),
                changed: Notify::new(),
                state: Mutex::new(FakeState::default()),
            })
        }

        fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.state.lock().unwrap()
        }

        fn record(&self, step: Step) -> Answer {
            let now = Instant::now();
            let mut st = self.state();
            let elapsed = now.duration_since(self.start).as_secs_f64();
            st.calls.push((step, elapsed));
            if st
                .outage
                .is_some_and(|(from, to)| (from..to).contains(&elapsed))
            {
                return Answer::Unreachable;
            }
            let script = match step {
                Step::Renew => &mut st.renew_script,
                _ => &mut st.login_script,
            };
            script.pop_front().unwrap_or(Answer::Ok)
        }

        fn calls(&self) -> Vec<(Step, f64)> {
            self.state().calls.clone()
        }

        fn logged_in_lease(&self, now: Instant) -> Lease {
            Lease {
                obtained: now,
                expires: Some(now + self.ttl),
                renewable: true,
                capped: false,
            }
        }
    }

    impl TokenOps for Fake {
        fn lease(&self) -> Option<Lease> {
            self.state().lease
        }

        fn changed(&self) -> &Notify {
            &self.changed
        }

        async fn renew_token(&self) -> Result<(), VaultError> {
            match self.record(Step::Renew) {
                Answer::Unreachable => return Err(VaultError::Unreachable("fake".into())),
                Answer::Refused => {
                    return Err(VaultError::PermissionDenied {
                        path: "renew".into(),
                    });
                }
                Answer::Ok => {}
            }
            let now = Instant::now();
            let mut st = self.state();
            let Some(current) = st.lease else {
                return Err(VaultError::PermissionDenied {
                    path: "renew".into(),
                });
            };
            if current.is_expired(now) {
                return Err(VaultError::PermissionDenied {
                    path: "renew".into(),
                });
            }
            let mut granted = self.ttl;
            if let (Some(max), Some(login_at)) = (self.max_ttl, st.login_at) {
                granted = granted.min((login_at + max).saturating_duration_since(now));
            }
            st.lease = Some(Lease {
                obtained: now,
                expires: Some(now + granted),
                renewable: true,
                capped: granted < self.ttl,
            });
            Ok(())
        }

        async fn relogin(&self) -> Result<(), VaultError> {
            match self.record(Step::Login) {
                Answer::Unreachable => return Err(VaultError::Unreachable("fake".into())),
                Answer::Refused => return Err(VaultError::Auth("fake".into())),
                Answer::Ok => {}
            }
            let now = Instant::now();
            let mut st = self.state();
            st.lease = Some(self.logged_in_lease(now));
            st.login_at = Some(now);
            Ok(())
        }
    }

    /// Runs the loop for `seconds` of (paused) time and returns its calls.
    async fn run_for(fake: &Arc<Fake>, seconds: f64) -> Vec<(Step, f64)> {
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let fake = fake.clone();
            let cancel = cancel.clone();
            async move { drive(&*fake, &cancel).await }
        });
        tokio::time::sleep(secs(seconds)).await;
        cancel.cancel();
        task.await.unwrap();
        fake.calls()
    }

    fn assert_calls(actual: &[(Step, f64)], expected: &[(Step, f64)]) {
        assert_eq!(actual.len(), expected.len(), "calls: {actual:?}");
        for ((step, at), (want_step, want_at)) in actual.iter().zip(expected) {
            assert_eq!(step, want_step, "calls: {actual:?}");
            assert!(
                (at - want_at).abs() < 0.01,
                "calls: {actual:?}, expected {expected:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renews_at_two_thirds_of_the_ttl() {
        let fake = Fake::new(30.0, None);
        fake.state().lease = Some(fake.logged_in_lease(Instant::now()));
        let calls = run_for(&fake, 95.0).await;
        use Step::Renew;
        assert_calls(
            &calls,
            &[(Renew, 20.0), (Renew, 40.0), (Renew, 60.0), (Renew, 80.0)],
        );
    }

    #[tokio::test(start_paused = true)]
    async fn logs_in_again_when_the_max_ttl_caps_renewal() {
        // AppRole role with token_ttl=3s, token_max_ttl=8s.
        let fake = Fake::new(3.0, Some(8.0));
        let calls = run_for(&fake, 13.0).await;
        use Step::{Login, Renew};
        assert_calls(
            &calls,
            &[
                (Login, 0.0),
                (Renew, 2.0),
                (Renew, 4.0),
                (Renew, 6.0), // granted 2 s < 3 s: capped
                (Login, 6.0),
                (Renew, 8.0),
                (Renew, 10.0),
                (Renew, 12.0),
                (Login, 12.0),
            ],
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backs_off_with_jitter_while_unreachable() {
        let fake = Fake::new(60.0, None);
        {
            let mut st = fake.state();
            st.lease = Some(fake.logged_in_lease(Instant::now()));
            st.renew_script = VecDeque::from([Answer::Unreachable; 3]);
        }
        let calls = run_for(&fake, 100.0).await;
        assert!(
            calls.iter().all(|(step, _)| *step == Step::Renew),
            "{calls:?}"
        );
        assert!(calls.len() >= 5, "{calls:?}");
        assert!((calls[0].1 - 40.0).abs() < 0.01);
        let gaps: Vec<f64> = calls.windows(2).map(|w| w[1].1 - w[0].1).collect();
        assert!((0.5..=1.0).contains(&gaps[0]), "{gaps:?}");
        assert!((1.0..=2.0).contains(&gaps[1]), "{gaps:?}");
        assert!((2.0..=4.0).contains(&gaps[2]), "{gaps:?}");
        // Back to the normal rhythm after the successful renewal.
        assert!((gaps[3] - 40.0).abs() < 0.01, "{gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn refused_renewal_logs_in_at_once() {
        let fake = Fake::new(30.0, None);
        {
            let mut st = fake.state();
            st.lease = Some(fake.logged_in_lease(Instant::now()));
            st.renew_script = VecDeque::from([Answer::Refused]);
        }
        let calls = run_for(&fake, 25.0).await;
        assert_calls(&calls, &[(Step::Renew, 20.0), (Step::Login, 20.0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_logins_back_off_and_recover() {
        let fake = Fake::new(30.0, None);
        fake.state().login_script = VecDeque::from([Answer::Refused, Answer::Unreachable]);
        let calls = run_for(&fake, 10.0).await;
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert!(calls.iter().all(|(step, _)| *step == Step::Login));
        assert!(
            (0.5..=1.0).contains(&(calls[1].1 - calls[0].1)),
            "{calls:?}"
        );
        assert!(
            (1.0..=2.0).contains(&(calls[2].1 - calls[1].1)),
            "{calls:?}"
        );
        assert!(fake.lease().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_during_an_outage_leads_to_login() {
        let fake = Fake::new(3.0, None);
        {
            let mut st = fake.state();
            st.lease = Some(fake.logged_in_lease(Instant::now()));
            st.outage = Some((2.0, 5.0));
        }
        let calls = run_for(&fake, 10.0).await;
        // Renewals while the token lives, logins once it expired, renewals after the login.
        let first_ok_login = calls
            .iter()
            .find(|(step, at)| *step == Step::Login && *at >= 5.0)
            .map(|(_, at)| *at)
            .unwrap_or_else(|| panic!("no login after the outage: {calls:?}"));
        for (step, at) in &calls {
            let expected = if *at < 3.0 || *at > first_ok_login {
                Step::Renew
            } else {
                Step::Login
            };
            assert_eq!(*step, expected, "{calls:?}");
        }
        assert!(
            calls
                .iter()
                .any(|(step, at)| *step == Step::Login && *at < 5.0),
            "{calls:?}"
        );
        assert!(!fake.lease().unwrap().is_expired(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn idles_without_expiry_until_the_token_changes() {
        let fake = Fake::new(30.0, None);
        let t0 = Instant::now();
        fake.state().lease = Some(lease(t0, None, false, false));
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let fake = fake.clone();
            let cancel = cancel.clone();
            async move { drive(&*fake, &cancel).await }
        });
        tokio::time::sleep(secs(1000.0)).await;
        assert!(fake.calls().is_empty());

        // A login elsewhere (a request that hit a revoked token) hands over a TTL'd token.
        fake.state().lease = Some(fake.logged_in_lease(Instant::now()));
        fake.changed.notify_waiters();
        tokio::time::sleep(secs(25.0)).await;
        cancel.cancel();
        task.await.unwrap();
        assert_calls(&fake.calls(), &[(Step::Renew, 1020.0)]);
    }
}
