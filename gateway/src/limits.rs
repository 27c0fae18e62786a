//! Per-socket limits (contract section 7): a token bucket for frames, and coalescing for the two
//! frames phones send in streams (typing, location), so one client can neither flood the workers
//! nor, through them, the other party's socket. Plain counters and timestamps: no allocation, no
//! task, no lock per frame.

use axum::extract::ws::Utf8Bytes;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// Whether the bucket has saved up all it can (its owner has been quiet).
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }

    /// How long until the bucket holds a whole token again.
    pub fn until_next(&self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if tokens >= 1.0 || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - tokens) / self.rate)
    }

    /// Whether `amount` tokens are there now (nothing is taken).
    pub fn has(&self, now: Instant, amount: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.burst) >= amount
    }

    /// Takes `amount` tokens if they are all there (none otherwise).
    pub fn take_many(&mut self, now: Instant, amount: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
        if self.tokens >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A frame held back by a [`Coalescer`]: where it goes and what it says.
pub struct Held {
    pub subject: String,
    pub text: Utf8Bytes,
}

/// At most one frame per `interval`; the ones in between are dropped but for the latest, which
/// goes out when the interval has passed.
pub struct Coalescer {
    interval: Duration,
    next_at: Option<Instant>,
    held: Option<Held>,
}

impl Coalescer {
    pub fn new(interval: Duration) -> Coalescer {
        Coalescer {
            interval,
            next_at: None,
            held: None,
        }
    }

    /// The frame to publish now, if any; otherwise it is held (replacing an older one).
    pub fn offer(&mut self, now: Instant, held: Held) -> Option<Held> {
        match self.next_at {
            Some(next_at) if now < next_at => {
                self.held = Some(held);
                None
            }
            _ => {
                self.next_at = Some(now + self.interval);
                Some(held)
            }
        }
    }

    /// When the held frame is due, if one is held.
    pub fn due(&self) -> Option<Instant> {
        self.held.as_ref().and(self.next_at)
    }

    /// The held frame, if it is due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<Held> {
        if self.due().is_some_and(|due| now >= due) {
            self.next_at = Some(now + self.interval);
            self.held.take()
        } else {
            None
        }
    }
}

/// Refusals that go on: a socket that keeps sending over its limit (a refusal at least every
/// second) for the configured time is closed (1008). Frames that pass in between (the bucket
/// refills) do not reset it, or a flood would never end.
#[derive(Default)]
pub struct Abuse {
    since: Option<Instant>,
    last: Option<Instant>,
}

/// A pause in refusals this long ends a streak.
const STREAK_GAP: Duration = Duration::from_secs(1);

impl Abuse {
    /// Records a refused frame; true when refusals have gone on for `patience`.
    pub fn refused(&mut self, now: Instant, patience: Duration) -> bool {
        let continues = self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) <= STREAK_GAP);
        if !continues {
            self.since = Some(now);
        }
        self.last = Some(now);
        self.since
            .is_some_and(|since| now.saturating_duration_since(since) >= patience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(text: &'static str) -> Held {
        Held {
            subject: String::from("s"),
            text: Utf8Bytes::from_static(text),
        }
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_sustained_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(20.0, 40.0, start);
        assert_eq!((0..100).filter(|_| bucket.take(start)).count(), 40);
        // One second later, 20 more.
        let later = start + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| bucket.take(later)).count(), 20);
    }

    #[test]
    fn coalescing_forwards_the_first_then_only_the_latest_once_per_interval() {
        let start = Instant::now();
        let mut typing = Coalescer::new(Duration::from_millis(500));
        assert!(typing.offer(start, held("a")).is_some());
        assert!(
            typing
                .offer(start + Duration::from_millis(10), held("b"))
                .is_none()
        );
        assert!(
            typing
                .offer(start + Duration::from_millis(20), held("c"))
                .is_none()
        );
        assert_eq!(typing.due(), Some(start + Duration::from_millis(500)));
        assert!(
            typing
                .take_due(start + Duration::from_millis(499))
                .is_none()
        );
        let due = typing
            .take_due(start + Duration::from_millis(500))
            .expect("the latest is due");
        assert_eq!(due.text.as_str(), "c");
        assert_eq!(typing.due(), None);
    }

    #[test]
    fn refusals_close_the_socket_only_when_they_go_on() {
        let start = Instant::now();
        let patience = Duration::from_secs(10);
        let mut abuse = Abuse::default();
        // A refusal every half second for ten seconds: closed at the end, not before.
        for step in 0..20 {
            assert!(!abuse.refused(start + Duration::from_millis(500 * step), patience));
        }
        assert!(abuse.refused(start + Duration::from_secs(10), patience));
        // A pause ends the streak.
        let later = start + Duration::from_secs(30);
        assert!(!abuse.refused(later, patience));
        assert!(!abuse.refused(later + Duration::from_secs(2), patience));
        assert!(!abuse.refused(later + Duration::from_secs(11), patience));
    }
}
