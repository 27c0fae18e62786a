//! A short memory of sessions that refuse frames: ids that name no session, and sessions that
//! ended. Typing and location frames are not stored; a client repeating them for such a session
//! (a stale tab, a hostile script) would otherwise cost a database query per frame. Bounded in
//! size and time, so a made-up id found later (it cannot be: ids are random UUIDs) or a flood of
//! made-up ids costs memory only for `REMEMBER`.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a refusal is remembered.
pub const REMEMBER: Duration = Duration::from_secs(10);
/// At most this many sessions are remembered; a full memory forgets what has lapsed, then all.
const CAPACITY: usize = 10_000;

/// Why frames for a session are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// No such session ("session not found" for everyone).
    Unknown,
    /// It ended: its participants get "session already ended", anyone else "session not found".
    Ended {
        seeker_id: String,
        provider_id: String,
    },
}

impl Closed {
    /// The error text `user_id` gets for a frame on this session.
    pub fn refusal_for(&self, user_id: &str) -> &'static str {
        match self {
            Closed::Ended {
                seeker_id,
                provider_id,
            } if seeker_id == user_id || provider_id == user_id => {
                shared::frames::errors::SESSION_ENDED
            }
            _ => shared::frames::errors::SESSION_NOT_FOUND,
        }
    }
}

#[derive(Default)]
pub struct ClosedSessions {
    entries: HashMap<Uuid, (Instant, Closed)>,
}

impl ClosedSessions {
    pub fn get(&self, session_id: &Uuid) -> Option<&Closed> {
        self.entries
            .get(session_id)
            .filter(|(since, _)| since.elapsed() < REMEMBER)
            .map(|(_, closed)| closed)
    }

    pub fn remember(&mut self, session_id: Uuid, closed: Closed) {
        if self.entries.len() >= CAPACITY {
            self.entries
                .retain(|_, (since, _)| since.elapsed() < REMEMBER);
            if self.entries.len() >= CAPACITY {
                self.entries.clear();
            }
        }
        self.entries.insert(session_id, (Instant::now(), closed));
    }

    pub fn forget(&mut self, session_id: &Uuid) {
        self.entries.remove(session_id);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_session_tells_its_participants_it_ended_and_anyone_else_nothing() {
        let mut closed = ClosedSessions::default();
        let session_id = Uuid::new_v4();
        closed.remember(
            session_id,
            Closed::Ended {
                seeker_id: String::from("s1"),
                provider_id: String::from("p1"),
            },
        );
        let remembered = closed.get(&session_id).expect("remembered");
        assert_eq!(remembered.refusal_for("p1"), "session already ended");
        assert_eq!(remembered.refusal_for("x"), "session not found");
        assert_eq!(closed.get(&Uuid::new_v4()), None);
    }

    #[test]
    fn a_flood_of_made_up_ids_never_grows_past_the_capacity() {
        let mut closed = ClosedSessions::default();
        for _ in 0..(CAPACITY * 3) {
            closed.remember(Uuid::new_v4(), Closed::Unknown);
        }
        assert!(closed.len() <= CAPACITY);
    }
}
