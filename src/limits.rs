//! Rate limits (GCRA, from the `governor` crate), in memory per instance: per openid on order and
//! payment creation, per order on the `queryorder` calls a payment callback triggers, per client
//! address on the endpoints without a verified caller. A limit is `n` per minute with a burst of `n`.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::config::RateLimits;

/// One keyed limit.
pub struct Limit {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Limit {
    fn per_minute(n: u32) -> Self {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Limit { limiter: RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)) }
    }

    /// `Ok` when `key` may go ahead now; otherwise the whole seconds to wait (at least 1).
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.limiter.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }

    /// Forgets keys whose limit has fully recovered, so memory stays bounded.
    fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Every limit the service applies. Plain data in `AppState`.
pub struct Limits {
    pub orders: Limit,
    pub payments: Limit,
    pub callback_queries: Limit,
    pub public: Limit,
}

impl Limits {
    pub fn new(settings: &RateLimits) -> Arc<Self> {
        Arc::new(Limits {
            orders: Limit::per_minute(settings.orders_per_openid),
            payments: Limit::per_minute(settings.payments_per_openid),
            callback_queries: Limit::per_minute(settings.callback_queries_per_order),
            public: Limit::per_minute(settings.public_per_address),
        })
    }

    pub fn forget_idle(&self) {
        for limit in [&self.orders, &self.payments, &self.callback_queries, &self.public] {
            limit.forget_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_and_other_keys_are_unaffected() {
        let limit = Limit::per_minute(3);
        for _ in 0..3 {
            assert_eq!(limit.check("a"), Ok(()));
        }
        let wait = limit.check("a").unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert_eq!(limit.check("b"), Ok(()));
    }
}
