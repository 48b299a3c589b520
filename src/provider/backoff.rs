//! The reconnect policy: exponential from 1 s to 60 s, each delay jittered down by up to 25%.
//!
//! backon's own jitter adds up to 100% on top of the delay (so a 60 s cap would wait up to 120 s);
//! we keep the cap a cap and spread instances below it instead.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

pub const MIN_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Delays between reconnect attempts; never ends. Start a new one after a healthy session.
pub struct ReconnectBackoff {
    inner: backon::ExponentialBackoff,
    rng: fastrand::Rng,
}

impl ReconnectBackoff {
    pub fn new() -> Self {
        Self::with_rng(fastrand::Rng::new())
    }

    fn with_rng(rng: fastrand::Rng) -> Self {
        let inner = ExponentialBuilder::default()
            .with_min_delay(MIN_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_factor(2.0)
            .without_max_times()
            .build();
        Self { inner, rng }
    }
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Iterator for ReconnectBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.inner.next().unwrap_or(MAX_DELAY);
        let jittered = base.mul_f64(1.0 - 0.25 * self.rng.f64());
        Some(jittered.clamp(MIN_DELAY, MAX_DELAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_from_one_second_to_the_sixty_second_cap() {
        for seed in 0..50 {
            let delays: Vec<_> = ReconnectBackoff::with_rng(fastrand::Rng::with_seed(seed))
                .take(12)
                .collect();
            assert_eq!(delays[0], MIN_DELAY);
            for (i, d) in delays.iter().enumerate() {
                let base = MIN_DELAY.mul_f64(2f64.powi(i as i32)).min(MAX_DELAY);
                assert!(*d <= base, "attempt {i}: {d:?} > {base:?}");
                assert!(
                    *d >= base.mul_f64(0.75).max(MIN_DELAY),
                    "attempt {i}: {d:?}"
                );
            }
            assert!(delays[11] >= Duration::from_secs(45));
        }
    }

    #[test]
    fn jitter_spreads_instances() {
        let a: Vec<_> = ReconnectBackoff::with_rng(fastrand::Rng::with_seed(1))
            .take(8)
            .collect();
        let b: Vec<_> = ReconnectBackoff::with_rng(fastrand::Rng::with_seed(2))
            .take(8)
            .collect();
        assert_ne!(a, b);
    }
}
