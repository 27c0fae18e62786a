-- The partitioned worker runtime (workers/src/runtime/): frames are applied in batches per
-- partition of the INBOUND stream, and each batch records the highest stream sequence it applied.
-- That one row per (worker kind, partition) replaces the per-frame record of handled frames and the
-- per-socket chat cursors: a redelivered frame at or below `applied_seq` is not applied again, and a
-- stale owner's batch, arriving after a newer owner moved the sequence on, applies nothing.

DROP TABLE handled_frames;
DROP TABLE chat_send_cursors;

CREATE TABLE partition_cursors (
    kind        TEXT    NOT NULL,
    partition   INTEGER NOT NULL CHECK (partition >= 0),
    applied_seq BIGINT  NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, partition)
);
