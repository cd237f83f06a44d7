//! Rate limits (GCRA, from the `governor` crate), in memory per instance: per openid on order and
//! payment creation, per order on the `queryorder` calls a payment callback triggers, per client
//! address on the endpoints without a verified caller. A limit is `n` per minute with a burst of `n`.
//! And [`Turns`]: one at a time per key, for the payment callbacks of one order; [`PaidOrders`]: the
//! orders this instance has seen paid, so a redelivered callback needs no read.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

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
    /// The payment callbacks of one order are handled one after the other.
    pub callback_turns: Turns,
    pub paid_orders: PaidOrders,
}

impl Limits {
    pub fn new(settings: &RateLimits) -> Arc<Self> {
        Arc::new(Limits {
            orders: Limit::per_minute(settings.orders_per_openid),
            payments: Limit::per_minute(settings.payments_per_openid),
            callback_queries: Limit::per_minute(settings.callback_queries_per_order),
            public: Limit::per_minute(settings.public_per_address),
            callback_turns: Turns::default(),
            paid_orders: PaidOrders::new(PAID_ORDERS_KEPT),
        })
    }

    pub fn forget_idle(&self) {
        for limit in [&self.orders, &self.payments, &self.callback_queries, &self.public] {
            limit.forget_idle();
        }
    }
}

/// One holder at a time per key, within this instance; the others wait their turn, first come first
/// served. A key is remembered only while someone holds or awaits it. It orders work, it guards
/// nothing: another replica does not see it, and the database's conditional writes stay the guard.
#[derive(Default)]
pub struct Turns {
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Turns {
    /// Waits for `key`'s turn; it lasts until the returned value is dropped.
    pub async fn take(&self, key: &str) -> Turn<'_> {
        let lock = self.lock_keys().entry(key.to_string()).or_default().clone();
        // Made before the wait, so that a wait given up also forgets the key when it was the last.
        let waiting = Waiting { turns: self, key: key.to_string(), lock };
        let held = waiting.lock.clone().lock_owned().await;
        Turn { held: Some(held), _waiting: waiting }
    }

    /// How many keys are held or awaited.
    pub fn len(&self) -> usize {
        self.lock_keys().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // The map is consistent after any panic (one insert or remove at a time).
        self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A key's turn, held.
pub struct Turn<'a> {
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
    _waiting: Waiting<'a>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Released before `_waiting` looks whether anyone else still wants the key.
        self.held.take();
    }
}

struct Waiting<'a> {
    turns: &'a Turns,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut keys = self.turns.lock_keys();
        // Clones are made only under the map's lock: the map's and this one left means nobody else.
        if Arc::strong_count(&self.lock) == 2 {
            keys.remove(&self.key);
        }
    }
}

/// How many paid orders an instance remembers: about 200 bytes each, under 1 MiB in all.
const PAID_ORDERS_KEPT: usize = 4096;

/// An order seen paid: by which WeChat transaction, for how many fen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paid {
    pub transaction_id: String,
    pub fen: i64,
}

/// Orders this instance has seen paid, at most `capacity` of them, the oldest forgotten first. What is
/// kept never changes once true: an order's amount is fixed when it is placed, its transaction id is
/// written once, with the payment, and a paid order never awaits payment again. So a callback that
/// matches what is kept is a redelivery, as the order's row would say.
pub struct PaidOrders {
    capacity: usize,
    kept: Mutex<(HashMap<String, Paid>, VecDeque<String>)>,
}

impl PaidOrders {
    pub fn new(capacity: usize) -> Self {
        PaidOrders { capacity, kept: Mutex::default() }
    }

    pub fn get(&self, order_number: &str) -> Option<Paid> {
        self.lock().0.get(order_number).cloned()
    }

    pub fn remember(&self, order_number: &str, paid: Paid) {
        let mut kept = self.lock();
        let (by_number, oldest_first) = &mut *kept;
        if by_number.insert(order_number.to_string(), paid).is_some() {
            return;
        }
        oldest_first.push_back(order_number.to_string());
        while oldest_first.len() > self.capacity {
            if let Some(forgotten) = oldest_first.pop_front() {
                by_number.remove(&forgotten);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Paid>, VecDeque<String>)> {
        // Both halves change together under the lock, and no step of it can panic halfway.
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_turn_per_key_at_a_time_and_keys_are_forgotten_when_nobody_waits() {
        let turns = Arc::new(Turns::default());
        let first = turns.take("a").await;
        let other = turns.take("b").await;
        let waiter = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let _turn = turns.take("a").await;
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a second taker of the same key waits");
        drop(other);
        assert_eq!(turns.len(), 1, "b is forgotten, a is held and awaited");
        drop(first);
        waiter.await.unwrap();
        assert!(turns.is_empty());
    }

    #[tokio::test]
    async fn a_wait_given_up_forgets_the_key() {
        let turns = Turns::default();
        let held = turns.take("a").await;
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(10), turns.take("a")).await;
        assert!(gave_up.is_err());
        drop(held);
        assert!(turns.is_empty());
    }

    #[test]
    fn paid_orders_keep_the_newest_up_to_their_capacity() {
        let paid = |n: i64| Paid { transaction_id: format!("4200{n}"), fen: n };
        let kept = PaidOrders::new(2);
        kept.remember("a", paid(1));
        kept.remember("b", paid(2));
        kept.remember("a", paid(1));
        kept.remember("c", paid(3));
        assert_eq!(kept.len(), 2);
        assert_eq!(kept.get("a"), None, "the oldest is forgotten first");
        assert_eq!((kept.get("b"), kept.get("c")), (Some(paid(2)), Some(paid(3))));
    }

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
