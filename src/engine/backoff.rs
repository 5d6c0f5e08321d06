//! Retry delays after failures: exponential (doubling from `initial`), capped at `max`, with
//! "equal jitter" (half fixed, half random) so that many failing jobs do not retry in lockstep.

use std::time::Duration;

use rand::Rng;

/// The delay before retry number `failures` (1 = after the first failure).
pub fn retry_delay(
    failures: u32,
    initial: Duration,
    max: Duration,
    rng: &mut impl Rng,
) -> Duration {
    let exp = failures.saturating_sub(1).min(31);
    let full = initial.checked_mul(1u32 << exp).unwrap_or(max).min(max);
    let half = full / 2;
    let jitter_ms = rng.random_range(0..=half.as_millis().min(u64::MAX as u128) as u64);
    half + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn doubles_and_caps_with_bounded_jitter() {
        let mut rng = StdRng::seed_from_u64(7);
        let initial = Duration::from_secs(10);
        let max = Duration::from_secs(900);
        for failures in 1..40 {
            let full = (initial * 2u32.pow((failures - 1).min(20))).min(max);
            for _ in 0..50 {
                let d = retry_delay(failures, initial, max, &mut rng);
                assert!(
                    d >= full / 2 && d <= full,
                    "failures={failures} d={d:?} full={full:?}"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_retries() {
        let mut rng = StdRng::seed_from_u64(1);
        let ds: std::collections::BTreeSet<_> = (0..20)
            .map(|_| {
                retry_delay(
                    3,
                    Duration::from_secs(10),
                    Duration::from_secs(900),
                    &mut rng,
                )
            })
            .collect();
        assert!(ds.len() > 10, "{ds:?}");
    }
}
