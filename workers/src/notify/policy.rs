//! What an attempt's answer means and when the next attempt goes (contract section 13): 2xx is
//! delivered; a network error, a timeout, 408, 429 or 5xx is retried after about 5 s, 5 min,
//! 30 min, 2 h, 5 h, 10 h and 10 h (each plus or minus 20 %, so receivers that failed together are
//! not hit together again), or after the answer's `Retry-After`; then given up. Any other status
//! (4xx, and 1xx/3xx: redirects are not followed) is given up at once: sending it again would get
//! the same answer.

use std::time::Duration;

/// The contract's schedule, in seconds after each failed attempt.
pub const DEFAULT_SCHEDULE: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];

/// A `Retry-After` longer than this is taken as this: a receiver cannot park an event forever.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What happened to one attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The receiver answered with this status (and `Retry-After`, when it had a readable one).
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, TLS failure, timeout.
    NoAnswer,
}

/// What to do with the delivery after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    Delivered,
    RetryAfter(Duration),
    GiveUp,
}

/// The retry schedule (`WEBHOOK_RETRY_SCHEDULE` overrides it, for tests and operators).
#[derive(Clone, Debug)]
pub struct Policy {
    delays: Vec<Duration>,
}

/// `WEBHOOK_RETRY_SCHEDULE` is not a comma-separated list of seconds.
#[derive(Debug, thiserror::Error)]
#[error("WEBHOOK_RETRY_SCHEDULE must be seconds separated by commas (e.g. 5,300,1800), not {0:?}")]
pub struct ScheduleError(String);

impl Default for Policy {
    fn default() -> Self {
        Policy {
            delays: DEFAULT_SCHEDULE.map(Duration::from_secs).to_vec(),
        }
    }
}

impl Policy {
    /// The schedule from `WEBHOOK_RETRY_SCHEDULE` (empty: the contract's), in seconds (fractions
    /// allowed: tests use tenths).
    pub fn parse(schedule: &str) -> Result<Policy, ScheduleError> {
        if schedule.trim().is_empty() {
            return Ok(Policy::default());
        }
        let delays = schedule
            .split(',')
            .map(|delay| {
                delay
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
                    .map(Duration::from_secs_f64)
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ScheduleError(schedule.to_owned()))?;
        Ok(Policy { delays })
    }

    /// How many attempts a delivery gets at most (the first and one per delay).
    pub fn max_attempts(&self) -> usize {
        self.delays.len() + 1
    }

    /// After attempt number `attempts` (1 for the first) answered `answer`; `jitter` is a number
    /// in [0, 1) that spreads the delay over plus or minus 20 %.
    pub fn next(&self, attempts: u32, answer: &Answer, jitter: f64) -> Next {
        let retry_after = match answer {
            Answer::Status { status, .. } if (200..300).contains(status) => return Next::Delivered,
            Answer::Status {
                status,
                retry_after,
            } if is_retryable(*status) => *retry_after,
            Answer::Status { .. } => return Next::GiveUp,
            Answer::NoAnswer => None,
        };
        let Some(delay) = self.delays.get((attempts as usize).saturating_sub(1)) else {
            return Next::GiveUp;
        };
        match retry_after {
            // The receiver said when: exactly then (it asked for it), within reason.
            Some(retry_after) => Next::RetryAfter(retry_after.min(MAX_RETRY_AFTER)),
            None => Next::RetryAfter(delay.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))),
        }
    }
}

/// Whether a status is worth trying again: 408, 429 and every 5xx.
fn is_retryable(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// `Retry-After`: seconds, or an HTTP date (RFC 9110); `now` is the current unix time.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> Answer {
        Answer::Status {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn two_hundreds_are_delivered_and_other_four_hundreds_given_up_at_once() {
        let policy = Policy::default();
        assert_eq!(policy.next(1, &status(200), 0.5), Next::Delivered);
        assert_eq!(policy.next(1, &status(204), 0.5), Next::Delivered);
        for given_up in [400, 401, 403, 404, 410, 422, 301, 302] {
            assert_eq!(
                policy.next(1, &status(given_up), 0.5),
                Next::GiveUp,
                "{given_up}"
            );
        }
    }

    #[test]
    fn failures_follow_the_schedule_with_twenty_percent_jitter_then_give_up() {
        let policy = Policy::default();
        for (index, seconds) in DEFAULT_SCHEDULE.iter().enumerate() {
            let attempts = index as u32 + 1;
            let nominal = Duration::from_secs(*seconds);
            for answer in [
                status(500),
                status(503),
                status(408),
                status(429),
                Answer::NoAnswer,
            ] {
                assert_eq!(
                    policy.next(attempts, &answer, 0.5),
                    Next::RetryAfter(nominal)
                );
            }
            assert_eq!(
                policy.next(attempts, &status(502), 0.0),
                Next::RetryAfter(nominal.mul_f64(0.8))
            );
            assert_eq!(
                policy.next(attempts, &status(502), 1.0),
                Next::RetryAfter(nominal.mul_f64(1.2))
            );
        }
        assert_eq!(policy.max_attempts(), 8);
        assert_eq!(policy.next(8, &status(500), 0.5), Next::GiveUp);
    }

    #[test]
    fn retry_after_is_honoured_in_seconds_or_as_a_date() {
        let policy = Policy::default();
        let answer = Answer::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(42)),
        };
        assert_eq!(
            policy.next(1, &answer, 0.0),
            Next::RetryAfter(Duration::from_secs(42))
        );
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .expect("date")
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn the_schedule_can_be_overridden() {
        let policy = Policy::parse("0.5, 1,2").expect("schedule");
        assert_eq!(policy.max_attempts(), 4);
        assert_eq!(
            policy.next(1, &status(500), 0.5),
            Next::RetryAfter(Duration::from_millis(500))
        );
        assert_eq!(policy.next(4, &status(500), 0.5), Next::GiveUp);
        assert!(Policy::parse("5,soon").is_err());
        assert_eq!(Policy::parse("").expect("default").max_attempts(), 8);
    }
}
