//! Per-token (or per-address) rate limit: a token bucket of `per_minute` requests, refilled
//! continuously. The buckets are bounded: a bucket that has refilled says nothing a fresh one
//! would not, so full ones are dropped once a minute and whenever the map reaches its bound;
//! while the map is still at its bound after that, new keys share one overflow bucket, so
//! made-up keys can neither grow memory nor reset the counts of the keys already kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimiter {
    per_minute: u32,
    max_keys: usize,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    map: HashMap<String, Bucket>,
    pruned: Instant,
}

/// Keys kept at most, by default.
const MAX_KEYS: usize = 50_000;
/// The bucket that keys share while the map is full.
const OVERFLOW: &str = "\0overflow";
/// How often full buckets are dropped.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `0` turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self::bounded(per_minute, MAX_KEYS)
    }

    /// A limiter that keeps at most `max_keys` buckets.
    pub fn bounded(per_minute: u32, max_keys: usize) -> Self {
        Self {
            per_minute,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                pruned: Instant::now(),
            }),
        }
    }

    /// How many keys have a bucket now.
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Err(seconds)` to wait when the token has no request left.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    /// Like `check`, without using a request: whether `key` has one left now.
    pub fn would_allow(&self, key: &str) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bucket) = buckets.map.get(key) else {
            return Ok(());
        };
        let per_second = f64::from(self.per_minute) / 60.0;
        let elapsed = Instant::now()
            .saturating_duration_since(bucket.updated)
            .as_secs_f64();
        let tokens = (bucket.tokens + elapsed * per_second).min(f64::from(self.per_minute));
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(((1.0 - tokens) / per_second).ceil().max(1.0) as u64)
        }
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let full_after = |b: &Bucket| {
            now.saturating_duration_since(b.updated).as_secs_f64() * per_second + b.tokens
                >= capacity
        };
        // Full, a prune is tried at most once a second: each costs a walk of the map.
        let since = now.saturating_duration_since(buckets.pruned);
        if since >= PRUNE_EVERY
            || (buckets.map.len() >= self.max_keys
                && !buckets.map.contains_key(key)
                && since >= std::time::Duration::from_secs(1))
        {
            buckets.map.retain(|_, b| !full_after(b));
            buckets.pruned = now;
        }
        let key = if buckets.map.len() >= self.max_keys && !buckets.map.contains_key(key) {
            OVERFLOW
        } else {
            key
        };
        let bucket = buckets.map.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refuses_past_the_limit_and_refills() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(limiter.check_at("a", t0).is_ok());
        }
        assert_eq!(limiter.check_at("a", t0), Err(1));
        assert!(limiter.check_at("b", t0).is_ok(), "buckets are per token");
        assert!(limiter.check_at("a", t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn made_up_keys_stay_within_the_bound_and_reset_no_one() {
        let limiter = RateLimiter::bounded(60, 100);
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(limiter.check_at("guesser", t0).is_ok());
        }
        assert!(limiter.check_at("guesser", t0).is_err());
        for i in 0..10_000 {
            let _ = limiter.check_at(&format!("k{i}"), t0);
            assert!(limiter.len() <= 101);
        }
        assert!(
            limiter.check_at("guesser", t0).is_err(),
            "a flood of new keys does not empty the guesser's bucket"
        );
    }

    #[test]
    fn refilled_buckets_are_dropped_after_a_minute() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        for i in 0..50 {
            let _ = limiter.check_at(&format!("k{i}"), t0);
        }
        let _ = limiter.check_at("late", t0 + Duration::from_secs(61));
        assert_eq!(limiter.len(), 1, "only the fresh bucket is left");
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = RateLimiter::new(0);
        for _ in 0..10_000 {
            assert!(limiter.check("a").is_ok());
        }
    }
}
