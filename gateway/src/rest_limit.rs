//! Per-user REST limit (contract section 12): one token bucket per user shared by every REST
//! route, `GATEWAY_REST_RATE_PER_SEC` tokens a second with bursts of twice that. A call over it
//! is answered 429 with `Retry-After` and never reaches a worker, so one user's script cannot
//! take the workers' REST capacity from everyone else.

use gateway::limits::TokenBucket;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before the full ones (users who stopped calling) are dropped.
const PRUNE_ABOVE: usize = 50_000;

pub struct RestLimit {
    rate: f64,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl RestLimit {
    pub fn new(rate_per_sec: f64) -> RestLimit {
        RestLimit {
            rate: rate_per_sec,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token of `user_id`'s bucket; when there is none, how long until there is one.
    pub fn take(&self, user_id: &str) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        let bucket = match buckets.get_mut(user_id) {
            Some(bucket) => bucket,
            None => buckets
                .entry(user_id.to_owned())
                .or_insert_with(|| TokenBucket::new(self.rate, self.rate * 2.0, now)),
        };
        if bucket.take(now) {
            Ok(())
        } else {
            Err(bucket.until_next(now))
        }
    }
}
