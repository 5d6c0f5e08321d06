//! When a job is next due, from its cadence and its persisted state alone (pure; no clock, no
//! I/O). Because the inputs are persisted, a restarted daemon computes the same answer: a job
//! that was due while the daemon was down is due once at start (one catch-up run, however many
//! fire times were missed), and one that already ran is not due again.

use chrono::{DateTime, SubsecRound, Utc};

use crate::config::Schedule;
use crate::job::Cadence;
use crate::store::JobState;

/// The moment the job is next due, or `None` if it never will be (a schedule with no future
/// fire time).
///
/// - A pending retry (after a failure) wins: it is due at `retry_at`.
/// - `Age(every)`: when the secret is older than `every`; without a known change time it is due
///   now (the run inspects the target and adopts an existing secret's age).
/// - `Interval(d)`: `d` after the last run started; due now if it never ran.
/// - `Schedule(s)`: the first fire time after the last run started; for a job that never ran,
///   the first fire time from now.
/// - A `window` then delays the moment to the first second, at or after it and not before
///   `now`, that the window's cron matches.
pub fn next_due(
    cadence: &Cadence,
    window: Option<&Schedule>,
    state: Option<&JobState>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let base = match state.and_then(|s| s.retry_at) {
        Some(retry_at) => retry_at,
        None => match cadence {
            Cadence::Age(every) => match state.and_then(|s| s.secret_changed_at) {
                Some(changed) => changed + every.as_chrono(),
                None => now,
            },
            Cadence::Interval(every) => match state.and_then(|s| s.last_run_at) {
                Some(last) => last + every.as_chrono(),
                None => now,
            },
            Cadence::Schedule(schedule) => match state.and_then(|s| s.last_run_at) {
                Some(last) => schedule.next_after(last)?,
                None => schedule.next_at_or_after(now.trunc_subsecs(0))?,
            },
        },
    };
    match window {
        None => Some(base),
        Some(window) => {
            let from = if base > now { base } else { now };
            window.next_at_or_after(from.trunc_subsecs(0))
        }
    }
}

/// The `window` that gates a job's next start: none while the job has a rotation open. Rolling
/// it forward (and retrying that after a failure) waits for no window: a half-done rotation may
/// have left consumers a credential the target refuses.
pub fn gating_window(window: Option<&Schedule>, rotation_open: bool) -> Option<&Schedule> {
    if rotation_open { None } else { window }
}

/// After a run that ended well, when the job may start again if its cadence alone would start
/// it again at once: `retry_initial` from now. An age cadence whose run could not learn the
/// secret's age (a refused write it cannot explain, nothing readable at the path) would
/// otherwise be due at every tick, once a second, forever. `None` when the job is not due.
pub fn settle_after_success(
    cadence: &Cadence,
    state: &JobState,
    now: DateTime<Utc>,
    retry_initial: chrono::Duration,
) -> Option<DateTime<Utc>> {
    let mut settled = state.clone();
    settled.retry_at = None;
    is_due(next_due(cadence, None, Some(&settled), now), now).then(|| now + retry_initial)
}

/// Whether the job should start now.
pub fn is_due(next: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    next.is_some_and(|t| t <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;
    use chrono::TimeZone;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, h, m, s).unwrap()
    }

    fn state() -> JobState {
        JobState {
            job: "j".into(),
            kind: "api-key".into(),
            ..JobState::default()
        }
    }

    #[test]
    fn age_cadence_follows_the_secret_change_time() {
        let every = Cadence::Age(Duration::from_secs(30 * 86_400));
        let mut s = state();
        s.secret_changed_at = Some(t(10, 0, 0));
        let next = next_due(&every, None, Some(&s), t(12, 0, 0)).unwrap();
        assert_eq!(next, t(10, 0, 0) + chrono::Duration::days(30));
        assert!(!is_due(Some(next), t(12, 0, 0)));
    }

    #[test]
    fn unknown_age_is_due_now_so_the_run_can_adopt_it() {
        let every = Cadence::Age(Duration::from_secs(60));
        assert_eq!(next_due(&every, None, None, t(1, 2, 3)), Some(t(1, 2, 3)));
    }

    #[test]
    fn missed_schedule_fire_times_give_one_catch_up() {
        let hourly = Cadence::Schedule(Schedule::parse("0 0 * * * *").unwrap());
        let mut s = state();
        s.last_run_at = Some(t(1, 0, 0));
        // Down from 01:00 to 05:30: due at 02:00 (in the past) → exactly one run now.
        let next = next_due(&hourly, None, Some(&s), t(5, 30, 0)).unwrap();
        assert_eq!(next, t(2, 0, 0));
        assert!(is_due(Some(next), t(5, 30, 0)));
        // After that run (started 05:30), the next is 06:00, not 03:00.
        s.last_run_at = Some(t(5, 30, 0));
        assert_eq!(
            next_due(&hourly, None, Some(&s), t(5, 30, 1)),
            Some(t(6, 0, 0))
        );
    }

    #[test]
    fn a_fresh_scheduled_job_waits_for_its_first_fire_time() {
        let hourly = Cadence::Schedule(Schedule::parse("0 0 * * * *").unwrap());
        assert_eq!(next_due(&hourly, None, None, t(5, 30, 0)), Some(t(6, 0, 0)));
    }

    #[test]
    fn retry_time_wins_over_the_cadence() {
        let every = Cadence::Age(Duration::from_secs(3600));
        let mut s = state();
        s.secret_changed_at = Some(t(1, 0, 0));
        s.retry_at = Some(t(1, 30, 0));
        assert_eq!(
            next_due(&every, None, Some(&s), t(1, 0, 0)),
            Some(t(1, 30, 0))
        );
    }

    #[test]
    fn a_successful_run_that_leaves_its_job_due_backs_off() {
        let every = Cadence::Age(Duration::from_secs(3600));
        let initial = chrono::Duration::seconds(10);
        let now = t(1, 0, 0);
        // Unknown age after the run: the next start waits `retry_initial`, not one tick.
        let s = state();
        assert_eq!(
            settle_after_success(&every, &s, now, initial),
            Some(now + initial)
        );
        // An age that is already past due (a version nobody could replace) is the same.
        let mut s = state();
        s.secret_changed_at = Some(t(0, 0, 0) - chrono::Duration::hours(2));
        assert_eq!(
            settle_after_success(&every, &s, now, initial),
            Some(now + initial)
        );
        // A fresh secret: due when it ages, nothing to hold back.
        s.secret_changed_at = Some(now);
        assert_eq!(settle_after_success(&every, &s, now, initial), None);
        // Interval and schedule cadences count from the run that just started.
        let interval = Cadence::Interval(Duration::from_secs(60));
        let mut s = state();
        s.last_run_at = Some(now);
        assert_eq!(settle_after_success(&interval, &s, now, initial), None);
        let hourly = Cadence::Schedule(Schedule::parse("0 0 * * * *").unwrap());
        assert_eq!(settle_after_success(&hourly, &s, now, initial), None);
    }

    #[test]
    fn a_window_delays_a_due_rotation_to_its_next_allowed_second() {
        let every = Cadence::Age(Duration::from_secs(3600));
        let nightly = Schedule::parse("* * 2-3 * * *").unwrap();
        let mut s = state();
        s.secret_changed_at = Some(t(10, 0, 0));
        // Due at 11:00 but the window allows only 02:00–03:59: wait for tomorrow 02:00.
        let next = next_due(&every, Some(&nightly), Some(&s), t(11, 0, 0)).unwrap();
        assert_eq!(next, t(2, 0, 0) + chrono::Duration::days(1));
        // Inside the window, a due rotation starts at once.
        s.secret_changed_at = Some(t(1, 0, 0) - chrono::Duration::hours(2));
        let now = t(2, 15, 7);
        assert_eq!(next_due(&every, Some(&nightly), Some(&s), now), Some(now));
    }
}
