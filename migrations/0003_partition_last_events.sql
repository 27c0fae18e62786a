-- The events of each partition's last applied batch, kept so that a batch whose commit was not
-- followed by its acks (the worker died in between) has its events published by the next owner when
-- the frames come back, instead of being lost: the acks and then the events go out on one
-- connection, so a batch that comes back never had its events delivered. One row per partition,
-- overwritten by every batch: bounded at any rate.
ALTER TABLE partition_cursors
    ADD COLUMN last_from_seq BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN last_events   JSONB  NOT NULL DEFAULT '[]';
