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

impl RateLimitConfig {
    pub fn compile(&self) -> Result<RateLimit, ConfigError> {
        let max = NonZeroU32::new(self.max_requests).ok_or_else(|| {
            ConfigError::Invalid("`rate_limit.max_requests` must be 1 or more".into())
        })?;
        if self.window_seconds == 0 {
            return Err(ConfigError::Invalid(
                "`rate_limit.window_seconds` must be 1 or more".into(),
            ));
        }
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
    fn zero_values_are_refused() {
        for (max, window, field) in [(0, 60, "max_requests"), (1, 0, "window_seconds")] {
            let c = RateLimitConfig {
                max_requests: max,
                window_seconds: window,
            };
            let err = c.compile().unwrap_err().to_string();
            assert_eq!(err, format!("`rate_limit.{field}` must be 1 or more"));
        }
    }
}
