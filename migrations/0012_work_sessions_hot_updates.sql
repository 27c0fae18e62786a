-- Every chat message moves its session's `last_message_seq` and `last_activity_at`. While
-- `last_activity_at` was part of the three inbox indexes, none of those updates could be HOT: each
-- wrote a new version of the row into every index of the table (eleven), and with autovacuum off
-- the dead versions piled up (issue 19). The inbox now finds a user's sessions by user alone and
-- orders them itself (a user has at most a few thousand; `bench inbox` measures it), so no index
-- holds a column a message changes, and the free space a lower fill factor leaves on each page
-- lets the new version stay on its page, pruned without a vacuum.
DROP INDEX work_sessions_inbox_by_seeker;
DROP INDEX work_sessions_inbox_by_provider;
DROP INDEX work_sessions_inbox_by_mediator;
CREATE INDEX work_sessions_by_seeker ON work_sessions (seeker_id);
CREATE INDEX work_sessions_by_provider ON work_sessions (provider_id);
CREATE INDEX work_sessions_by_mediator ON work_sessions (mediator_id) WHERE mediator_id IS NOT NULL;
ALTER TABLE work_sessions SET (fillfactor = 50);
