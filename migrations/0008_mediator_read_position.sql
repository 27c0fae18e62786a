-- A mediator's reading changes no message's status (contract section 10), so their unread count
-- comes from how far they have read: the highest seq of their messages_read.
ALTER TABLE work_sessions ADD COLUMN mediator_read_seq BIGINT NOT NULL DEFAULT 0;
