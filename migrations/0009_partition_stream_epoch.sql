-- The INBOUND stream a cursor's applied_seq counts in: its creation time (unix nanoseconds), as
-- NATS reports it. A stream made again (by an operator, a layout change, a node that lost its
-- store) starts its sequences at 1 again; a cursor of another epoch is reset instead of skipping
-- every new frame as "already applied". 0: not known yet (a cursor from before this column).
ALTER TABLE partition_cursors ADD COLUMN stream_epoch BIGINT NOT NULL DEFAULT 0;
