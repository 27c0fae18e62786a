//! "The provider has arrived" (contract section 14): when the provider comes within
//! `ARRIVAL_RADIUS_M` of the seeker on two consecutive provider fixes, both parties get
//! `provider_arrived` and the chat gets the system message "The provider has arrived.".
//!
//! Why it is built this way. GPS jitters by tens of metres and a provider may park at the edge of
//! the radius, so a plain "distance < radius" test would announce the arrival again and again:
//! - **A run of two fixes**: one fix inside could be a jump; two consecutive provider fixes inside
//!   make an arrival. The distance is the one between the parties' latest positions, so a seeker
//!   walking to a parked provider counts too; the seeker's fixes move the point the provider's
//!   next fix is measured against, and only the provider's fixes are steps of the run.
//! - **Accuracy**: a fix whose `accuracy` is worse than the radius says nothing about being
//!   inside it: it is skipped (it neither counts nor breaks the run), and a seeker fix that
//!   inaccurate does not move the point measured against. A fix without `accuracy` counts (the
//!   mobile clients of seed 000 send none).
//! - **Hysteresis**: after an arrival nothing fires again until a provider fix strictly beyond the
//!   exit distance, `ARRIVAL_RADIUS_M + max(50, ARRIVAL_RADIUS_M / 2)`, re-arms it; and at most
//!   [`MAX_ARRIVALS`] times per session.
//!
//! Exactly once per approach with several instances and across an instance's death: the run lives
//! in the owner's memory (it costs nothing per frame), while what must outlive an instance is in
//! `work_sessions` (`arrivals_count`, `arrival_armed`, migration 0013). The announcement is a
//! conditional UPDATE (armed, fewer than 3, session live) in the transaction that writes the
//! system message: of two instances that both saw the run (a hand-over, when both briefly think
//! they own the session) one wins, and an instance that takes a session over loads it disarmed if
//! its arrival was announced, so it stays silent until the provider has left and come back.
//!
//! Bounded work: a frame costs one haversine and a few comparisons. Postgres is asked only when
//! a fix completes a run while armed (the announcement) or is the first beyond the exit distance
//! while disarmed (one UPDATE that re-arms, so a new owner inherits it); each happens at most
//! about [`MAX_ARRIVALS`] times per session, and a write that failed is retried on a later fix
//! no sooner than [`RETRY_AFTER`], so an outage does not turn into a query per frame. A run
//! seen in part by an instance that died starts over at the new owner (which measures against the
//! seeker position of the last tick until the seeker's next fix): the arrival comes a fix later,
//! never twice.

use crate::outbox::{Delivery, Outbox};
use shared::frames::Event;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Arrivals announced per session at most.
pub const MAX_ARRIVALS: i16 = 3;
/// Consecutive provider fixes inside the radius that make an arrival.
const FIXES_TO_ARRIVE: u8 = 2;
/// After a failed write, the next fix that would write waits at least this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The radius and the exit distance, from `ARRIVAL_RADIUS_M`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArrivalRule {
    radius_meters: f64,
    exit_meters: f64,
}

impl ArrivalRule {
    pub fn new(radius_meters: f64) -> ArrivalRule {
        ArrivalRule {
            radius_meters,
            exit_meters: radius_meters + (radius_meters / 2.0).max(50.0),
        }
    }

    pub fn radius_meters(&self) -> f64 {
        self.radius_meters
    }

    pub fn exit_meters(&self) -> f64 {
        self.exit_meters
    }

    /// Whether a fix of this accuracy may count for arrival: unknown, or at most the radius.
    pub fn accurate_enough(&self, accuracy_meters: Option<f64>) -> bool {
        accuracy_meters.is_none_or(|accuracy| accuracy <= self.radius_meters)
    }
}

/// An `accuracy` that is not a number > 0: the frame is answered "invalid accuracy".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidAccuracy;

/// `accuracy` of a `location_update`: absent (or null) is unknown, a number > 0 is metres, and
/// anything else is refused.
pub fn parse_accuracy(value: Option<&serde_json::Value>) -> Result<Option<f64>, InvalidAccuracy> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|meters| meters.is_finite() && *meters > 0.0)
            .map(Some)
            .ok_or(InvalidAccuracy),
    }
}

/// What a provider fix asks of Postgres.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// The run is complete and the session armed: try the conditional UPDATE.
    Announce,
    /// Beyond the exit distance while disarmed: store that the next approach may fire.
    Rearm,
}

/// One session's arrival state in its owner's memory.
#[derive(Clone, Debug, PartialEq)]
pub struct ArrivalState {
    /// Consecutive provider fixes inside the radius (capped at what an arrival needs).
    inside_fixes: u8,
    /// As last read from or written to `work_sessions.arrival_armed`.
    armed: bool,
    /// As last read from or written to `work_sessions.arrivals_count`.
    arrivals: i16,
    /// A failed write holds the next one back until then.
    retry_at: Option<Instant>,
}

impl ArrivalState {
    /// The state of a session loaded from `work_sessions` (the run starts empty).
    pub fn loaded(arrivals_count: i16, arrival_armed: bool) -> ArrivalState {
        ArrivalState {
            inside_fixes: 0,
            armed: arrival_armed,
            arrivals: arrivals_count,
            retry_at: None,
        }
    }

    /// A provider fix accurate enough to count, `distance_meters` from the seeker.
    pub fn on_provider_fix(
        &mut self,
        rule: &ArrivalRule,
        distance_meters: f64,
        now: Instant,
    ) -> Step {
        if self.arrivals >= MAX_ARRIVALS {
            return Step::Nothing;
        }
        let may_write = self.retry_at.is_none_or(|retry_at| now >= retry_at);
        if distance_meters <= rule.radius_meters {
            self.inside_fixes = (self.inside_fixes + 1).min(FIXES_TO_ARRIVE);
            if self.inside_fixes >= FIXES_TO_ARRIVE && self.armed && may_write {
                return Step::Announce;
            }
        } else {
            self.inside_fixes = 0;
            if distance_meters > rule.exit_meters && !self.armed && may_write {
                return Step::Rearm;
            }
        }
        Step::Nothing
    }

    /// The conditional UPDATE answered: `Some(count)` when this instance announced the arrival,
    /// `None` when the row was no longer armed (announced by another instance, or the session
    /// ended): disarmed either way until the provider leaves.
    pub fn announced(&mut self, arrivals_count: Option<i16>) {
        self.armed = false;
        self.retry_at = None;
        if let Some(count) = arrivals_count {
            self.arrivals = count;
        }
    }

    /// The re-arming UPDATE answered with the stored state, or `None`: the session is no longer
    /// live, and nothing more is asked of Postgres for it (its end notice or the next tick drops it).
    pub fn rearmed(&mut self, stored: Option<(bool, i16)>) {
        self.retry_at = None;
        match stored {
            Some((armed, count)) => {
                self.armed = armed;
                self.arrivals = count;
            }
            None => self.arrivals = MAX_ARRIVALS,
        }
    }

    /// A write failed: the fixes that follow may try again after [`RETRY_AFTER`].
    pub fn write_failed(&mut self, now: Instant) {
        self.retry_at = Some(now + RETRY_AFTER);
    }
}

/// What an announcement sends once its transaction committed.
pub struct Announcement {
    pub arrivals_count: i16,
    pub deliveries: Vec<Delivery>,
}

/// Records the arrival (if the session is still armed, live and under the cap) and writes the
/// system message in the same transaction; `None` when the row refused it.
pub async fn announce(
    pool: &PgPool,
    session_id: Uuid,
    distance_meters: f64,
) -> Result<Option<Announcement>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The UPDATE also takes the row lock that the system message's `seq` needs.
    let claimed: Option<(String, String, Option<String>, i16, i64)> = sqlx::query_as(
        "UPDATE work_sessions SET arrivals_count = arrivals_count + 1, arrival_armed = false
         WHERE session_id = $1 AND arrival_armed AND arrivals_count < $2
           AND connection_state IN ('waiting', 'active')
         RETURNING seeker_id, provider_id, mediator_id, arrivals_count, work_id",
    )
    .bind(session_id)
    .bind(MAX_ARRIVALS)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((seeker_id, provider_id, mediator_id, arrivals_count, work_id)) = claimed else {
        return Ok(None);
    };
    let mut outbox = Outbox::default();
    let distance_meters = (distance_meters * 10.0).round() / 10.0;
    let event = Event::ProviderArrived {
        session_id,
        distance_meters,
        timestamp: shared::time::now(),
    };
    // The seeker, if offline, gets `session.provider_arrived` (contract section 14).
    crate::webhook_events::provider_arrived(
        &mut tx,
        &seeker_id,
        session_id,
        work_id,
        distance_meters,
    )
    .await?;
    outbox.to_user(&seeker_id, &event);
    outbox.to_user(&provider_id, &event);
    let mut recipients = vec![seeker_id.as_str(), provider_id.as_str()];
    recipients.extend(mediator_id.as_deref());
    crate::system_messages::write(
        &mut tx,
        session_id,
        crate::system_messages::PROVIDER_ARRIVED,
        &recipients,
        &mut outbox,
    )
    .await?;
    tx.commit().await?;
    Ok(Some(Announcement {
        arrivals_count,
        deliveries: outbox.into_deliveries(),
    }))
}

/// Stores that the provider left: the next approach may be announced (unless the cap is reached).
/// Answers the stored (armed, count), or `None` when the session is no longer live.
pub async fn rearm(pool: &PgPool, session_id: Uuid) -> Result<Option<(bool, i16)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE work_sessions SET arrival_armed = arrivals_count < $2
         WHERE session_id = $1 AND connection_state IN ('waiting', 'active')
         RETURNING arrival_armed, arrivals_count",
    )
    .bind(session_id)
    .bind(MAX_ARRIVALS)
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn armed() -> ArrivalState {
        ArrivalState::loaded(0, true)
    }

    #[test]
    fn the_exit_distance_is_the_radius_plus_the_larger_of_50_m_and_half_of_it() {
        assert_eq!(ArrivalRule::new(100.0).exit_meters(), 150.0);
        assert_eq!(ArrivalRule::new(60.0).exit_meters(), 110.0);
        assert_eq!(ArrivalRule::new(300.0).exit_meters(), 450.0);
    }

    #[test]
    fn accuracy_is_optional_and_positive() {
        use serde_json::json;
        assert_eq!(parse_accuracy(None), Ok(None));
        assert_eq!(parse_accuracy(Some(&json!(null))), Ok(None));
        assert_eq!(parse_accuracy(Some(&json!(12.5))), Ok(Some(12.5)));
        assert_eq!(parse_accuracy(Some(&json!(3))), Ok(Some(3.0)));
        for bad in [json!(0), json!(-4.0), json!("5"), json!(true), json!([1])] {
            assert_eq!(parse_accuracy(Some(&bad)), Err(InvalidAccuracy), "{bad}");
        }
        let rule = ArrivalRule::new(100.0);
        assert!(rule.accurate_enough(None));
        assert!(rule.accurate_enough(Some(100.0)));
        assert!(!rule.accurate_enough(Some(100.5)));
    }

    #[test]
    fn two_consecutive_fixes_inside_announce_and_one_is_not_enough() {
        let (rule, now) = (ArrivalRule::new(100.0), Instant::now());
        let mut state = armed();
        assert_eq!(state.on_provider_fix(&rule, 90.0, now), Step::Nothing);
        assert_eq!(state.on_provider_fix(&rule, 120.0, now), Step::Nothing);
        assert_eq!(state.on_provider_fix(&rule, 100.0, now), Step::Nothing);
        assert_eq!(state.on_provider_fix(&rule, 40.0, now), Step::Announce);
        state.announced(Some(1));
        for _ in 0..5 {
            assert_eq!(state.on_provider_fix(&rule, 10.0, now), Step::Nothing);
        }
    }

    #[test]
    fn jitter_between_the_radius_and_the_exit_distance_never_rearms() {
        let (rule, now) = (ArrivalRule::new(100.0), Instant::now());
        let mut state = armed();
        state.on_provider_fix(&rule, 50.0, now);
        assert_eq!(state.on_provider_fix(&rule, 50.0, now), Step::Announce);
        state.announced(Some(1));
        for distance in [95.0, 140.0, 95.0, 95.0, 150.0, 99.0, 98.0] {
            assert_eq!(state.on_provider_fix(&rule, distance, now), Step::Nothing);
        }
        assert_eq!(state.on_provider_fix(&rule, 150.5, now), Step::Rearm);
        state.rearmed(Some((true, 1)));
        state.on_provider_fix(&rule, 80.0, now);
        assert_eq!(state.on_provider_fix(&rule, 80.0, now), Step::Announce);
    }

    #[test]
    fn at_most_three_arrivals_per_session() {
        let (rule, now) = (ArrivalRule::new(100.0), Instant::now());
        let mut state = ArrivalState::loaded(3, false);
        assert_eq!(state.on_provider_fix(&rule, 500.0, now), Step::Nothing);
        state.on_provider_fix(&rule, 10.0, now);
        assert_eq!(state.on_provider_fix(&rule, 10.0, now), Step::Nothing);
    }

    #[test]
    fn a_refused_announcement_disarms_and_a_failed_write_waits_before_trying_again() {
        let (rule, now) = (ArrivalRule::new(100.0), Instant::now());
        let mut state = armed();
        state.on_provider_fix(&rule, 10.0, now);
        assert_eq!(state.on_provider_fix(&rule, 10.0, now), Step::Announce);
        state.write_failed(now);
        assert_eq!(state.on_provider_fix(&rule, 10.0, now), Step::Nothing);
        let later = now + RETRY_AFTER;
        assert_eq!(state.on_provider_fix(&rule, 10.0, later), Step::Announce);
        state.announced(None);
        assert_eq!(state.on_provider_fix(&rule, 10.0, later), Step::Nothing);
        assert_eq!(state.on_provider_fix(&rule, 200.0, later), Step::Rearm);
        // The session ended meanwhile: no more writes for it.
        state.rearmed(None);
        assert_eq!(state.on_provider_fix(&rule, 200.0, later), Step::Nothing);
        state.on_provider_fix(&rule, 10.0, later);
        assert_eq!(state.on_provider_fix(&rule, 10.0, later), Step::Nothing);
    }
}
