-- A seeker is in at most one live (waiting or active) session. The accept handler checks it, but
-- two providers accepting two orders of one seeker in the same instant (two lifecycle instances,
-- two transactions) both passed that check; this index makes the second insert fail instead.
DROP INDEX IF EXISTS work_sessions_live_by_seeker;
CREATE UNIQUE INDEX work_sessions_one_live_per_seeker ON work_sessions (seeker_id)
    WHERE connection_state IN ('waiting', 'active');
