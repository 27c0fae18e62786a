//! The owned sessions' positions and arrival runs, kept in memory between frames so a frame costs
//! no database read.

use super::arrival::ArrivalState;
use crate::closed_sessions::{Closed, ClosedSessions};
use shared::geo::{self, Position};
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct TrackedSession {
    pub seeker_id: String,
    pub provider_id: String,
    pub seeker: Option<Position>,
    pub provider: Option<Position>,
    /// The positions the last `distance_update` was computed from.
    pub used: Option<(Position, Position)>,
    pub last_distance_meters: Option<f64>,
    /// The seeker's latest position from a fix accurate enough for arrival (contract section 14):
    /// what the provider's fixes are measured against.
    pub seeker_for_arrival: Option<Position>,
    pub arrival: ArrivalState,
}

impl TrackedSession {
    pub fn both(&self) -> Option<(Position, Position)> {
        self.seeker.zip(self.provider)
    }

    /// True when an update is due after a position changed: both became known, or either party
    /// moved at least `min_move_meters` from the position used last time.
    pub fn update_due(&self, min_move_meters: f64) -> bool {
        match (self.both(), self.used) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some((seeker, provider)), Some((used_seeker, used_provider))) => {
                geo::distance_meters(seeker, used_seeker) >= min_move_meters
                    || geo::distance_meters(provider, used_provider) >= min_move_meters
            }
        }
    }
}

#[derive(Default)]
pub struct Tracker {
    pub sessions: HashMap<Uuid, TrackedSession>,
    /// Unknown and ended sessions, so their frames are refused without a query each.
    pub closed: ClosedSessions,
}

impl Tracker {
    /// The session ended: stop tracking it, and refuse its frames for a while without a query.
    pub fn forget(&mut self, session_id: &Uuid) {
        if let Some(session) = self.sessions.remove(session_id) {
            self.closed.remember(
                *session_id,
                Closed::Ended {
                    seeker_id: session.seeker_id,
                    provider_id: session.provider_id,
                },
            );
        }
    }
}
