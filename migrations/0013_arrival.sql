-- Arrival (contract section 14): "the provider has arrived" is announced once per approach and at
-- most 3 times per session, however many distance instances run and whichever of them dies. The
-- run of fixes inside the radius lives in the owner's memory; what must survive an instance is
-- here, and the announcement is this row's conditional UPDATE:
--   UPDATE ... SET arrivals_count = arrivals_count + 1, arrival_armed = false
--   WHERE arrival_armed AND arrivals_count < 3 AND the session is live
-- so two instances that both saw the run (an ownership hand-over) announce it once, and a new
-- owner loads a disarmed session and stays silent until the provider has left and come back.
-- `arrival_armed` turns true again when the provider is seen beyond the exit distance.
--
-- Constant defaults: adding the columns rewrites nothing. No CHECK on the count: the UPDATE above
-- is the only writer that raises it, and validating a CHECK would read the whole table.
ALTER TABLE work_sessions
    ADD COLUMN arrivals_count SMALLINT NOT NULL DEFAULT 0,
    ADD COLUMN arrival_armed  BOOLEAN  NOT NULL DEFAULT true;
