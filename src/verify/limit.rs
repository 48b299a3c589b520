//! `rate_limit`: at most `max_requests` per `window_seconds` for one webhook (GCRA via governor).

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{clock::Clock, DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub max_requests: u32,
    pub window_seconds: u64,
}

/// One webhook's limiter; a new config version starts a new one.
#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimit")
    }
}

/// The ranges accepted (documented in the README): a window up to 31 days, up to a million
/// requests in it. Outside them the entry is invalid, never handed to the limiter library.
pub const MAX_REQUESTS: u32 = 1_000_000;
pub const MAX_WINDOW_SECS: u64 = 31 * 24 * 3600;

impl RateLimitConfig {
    pub fn compile(&self) -> Result<RateLimit, ConfigError> {
        if !(1..=MAX_REQUESTS).contains(&self.max_requests) {
            return Err(ConfigError::Invalid(format!(
                "`rate_limit.max_requests` is {}; it must be between 1 and {MAX_REQUESTS}",
                self.max_requests
            )));
        }
        if !(1..=MAX_WINDOW_SECS).contains(&self.window_seconds) {
            return Err(ConfigError::Invalid(format!(
                "`rate_limit.window_seconds` is {}; it must be between 1 and {MAX_WINDOW_SECS}",
                self.window_seconds
            )));
        }
        let max = NonZeroU32::new(self.max_requests).ok_or_else(|| {
            ConfigError::Invalid("`rate_limit.max_requests` must be 1 or more".into())
        })?;
        let period = Duration::from_secs(self.window_seconds) / max.get();
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .ok_or_else(|| ConfigError::Invalid("`rate_limit` period is zero".into()))?
            .allow_burst(max);
        Ok(RateLimit {
            limiter: Arc::new(RateLimiter::direct(quota)),
        })
    }
}

impl RateLimit {
    /// `Err(seconds to wait)` when over the limit.
    pub fn check(&self) -> Result<(), u64> {
        self.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses_with_a_wait() {
        let limit = RateLimitConfig {
            max_requests: 3,
            window_seconds: 60,
        }
        .compile()
        .unwrap();
        for _ in 0..3 {
            assert!(limit.check().is_ok());
        }
        let wait = limit.check().unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
    }

    #[test]
    fn values_outside_the_documented_ranges_are_refused() {
        for (max, window, field) in [
            (0, 60, "max_requests` is 0"),
            (MAX_REQUESTS + 1, 60, "max_requests` is 1000001"),
            (1, 0, "window_seconds` is 0"),
            (1, MAX_WINDOW_SECS + 1, "window_seconds` is 2678401"),
            // Once a panic inside the limiter library (a period past u64 nanoseconds).
            (1, 20_000_000_000, "window_seconds` is 20000000000"),
            (1, u64::MAX, "window_seconds"),
        ] {
            let c = RateLimitConfig {
                max_requests: max,
                window_seconds: window,
            };
            let err = c.compile().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
            assert!(err.contains("it must be between 1 and"), "{err}");
        }
    }

    #[test]
    fn the_edges_of_the_ranges_compile() {
        for (max, window) in [
            (1, 1),
            (MAX_REQUESTS, 1),
            (1, MAX_WINDOW_SECS),
            (MAX_REQUESTS, MAX_WINDOW_SECS),
        ] {
            let limit = RateLimitConfig {
                max_requests: max,
                window_seconds: window,
            }
            .compile()
            .unwrap();
            assert!(limit.check().is_ok());
        }
    }
}
