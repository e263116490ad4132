-- Public tables of earlywarn (product.md §8). Analysts query these directly: keep names and columns,
-- add others freely. All timestamps are TIMESTAMPTZ in UTC. The store module executes this file at open.

CREATE TABLE IF NOT EXISTS readings (
    site        VARCHAR     NOT NULL,
    tag         VARCHAR     NOT NULL,
    ts          TIMESTAMPTZ NOT NULL,
    value       DOUBLE,                 -- NULL when the payload said null (quality is then 'bad')
    quality     VARCHAR     NOT NULL,   -- good | uncertain | bad
    batch_seq   BIGINT      NOT NULL    -- commit that stored it; rule-state catch-up after a restart
);

-- Readings of CommitBatch.maybe_dup that were new: stored, not evaluated by the rules (product.md §5).
ALTER TABLE readings ADD COLUMN IF NOT EXISTS late BOOLEAN DEFAULT false;

CREATE TABLE IF NOT EXISTS rejects (
    received_at TIMESTAMPTZ NOT NULL,
    topic       VARCHAR     NOT NULL,
    reason      VARCHAR     NOT NULL,
    payload     VARCHAR                 -- an excerpt
);

CREATE TABLE IF NOT EXISTS signals (
    site        VARCHAR     NOT NULL,
    tag         VARCHAR     NOT NULL,
    rule_id     VARCHAR     NOT NULL,
    severity    VARCHAR     NOT NULL,
    kind        VARCHAR     NOT NULL,   -- raise | clear
    ts          TIMESTAMPTZ NOT NULL,   -- event time of the reading that raised / cleared
    value       DOUBLE,
    message     VARCHAR,
    detail      VARCHAR
);

CREATE TABLE IF NOT EXISTS alarms (
    alarm_id        VARCHAR PRIMARY KEY,
    site            VARCHAR     NOT NULL,
    plant           VARCHAR     NOT NULL,
    district        VARCHAR     NOT NULL,
    tag             VARCHAR     NOT NULL,
    rule_id         VARCHAR     NOT NULL,
    severity        VARCHAR     NOT NULL,   -- red | orange | yellow | blue
    state           VARCHAR     NOT NULL,   -- active_unack | active_ack | cleared_unack | cleared_ack | closed
    raised_at       TIMESTAMPTZ NOT NULL,
    acked_at        TIMESTAMPTZ,
    acked_by        VARCHAR,
    cleared_at      TIMESTAMPTZ,
    closed_at       TIMESTAMPTZ,
    closed_by       VARCHAR,
    disposition     VARCHAR,
    note            VARCHAR,
    occurrences     INTEGER     NOT NULL,
    peak_value      DOUBLE,
    escalation_tier VARCHAR     NOT NULL,   -- plant | township | county | city
    -- beyond the contract
    message             VARCHAR,
    value               DOUBLE,             -- value at the last activation
    last_activation_at  TIMESTAMPTZ,
    ack_due_at          TIMESTAMPTZ,        -- raised_at + the severity's ack deadline when raised
    close_due_at        TIMESTAMPTZ,        -- raised_at + the severity's close deadline when raised
    shelved_until       TIMESTAMPTZ,
    shelved_by          VARCHAR,
    shelve_reason       VARCHAR,
    suppressed          BOOLEAN     NOT NULL DEFAULT false,
    chattering          BOOLEAN     NOT NULL DEFAULT false,
    flood               BOOLEAN     NOT NULL DEFAULT false,
    updated_at          TIMESTAMPTZ
);

-- Lifecycle timers of model.Alarm, so that escalations and reminders survive a restart. Added with ALTER
-- (idempotent) so that a database created by an earlier version gains them at open.
ALTER TABLE alarms ADD COLUMN IF NOT EXISTS last_notified_at TIMESTAMPTZ;
ALTER TABLE alarms ADD COLUMN IF NOT EXISTS unacked_since_at TIMESTAMPTZ;   -- the ack deadline counts from here
ALTER TABLE alarms ADD COLUMN IF NOT EXISTS ack_escalations INTEGER DEFAULT 0;
ALTER TABLE alarms ADD COLUMN IF NOT EXISTS close_escalated BOOLEAN DEFAULT false;
ALTER TABLE alarms ADD COLUMN IF NOT EXISTS last_reminded_at TIMESTAMPTZ;

CREATE TABLE IF NOT EXISTS alarm_events (
    alarm_id    VARCHAR     NOT NULL,
    ts          TIMESTAMPTZ NOT NULL,   -- event time for raised / reactivated / cleared
    kind        VARCHAR     NOT NULL,   -- raised reactivated cleared acked commented shelved unshelved
                                        -- suppressed escalated reminded closed
    actor       VARCHAR     NOT NULL,
    detail      VARCHAR
);

CREATE TABLE IF NOT EXISTS notices (
    notice_id   VARCHAR     NOT NULL,
    alarm_id    VARCHAR     NOT NULL,   -- one row per alarm in a grouped notice
    channel     VARCHAR     NOT NULL,   -- mqtt | webhook | email | log
    recipient   VARCHAR,
    tier        VARCHAR,
    reason      VARCHAR,                -- raised | reactivated | escalated | reminder
    sent_at     TIMESTAMPTZ NOT NULL,
    outcome     VARCHAR     NOT NULL,   -- delivered | failed | retrying | dead_letter
    error       VARCHAR,
    attempt     INTEGER
);

CREATE TABLE IF NOT EXISTS maintenance_windows (
    window_id   VARCHAR PRIMARY KEY,
    site        VARCHAR     NOT NULL,
    tag         VARCHAR,                -- NULL = the whole site
    starts_at   TIMESTAMPTZ NOT NULL,
    ends_at     TIMESTAMPTZ NOT NULL,
    reason      VARCHAR     NOT NULL,
    created_by  VARCHAR     NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- Engine checkpoints (rule state snapshots and friends): opaque blobs written in the same transaction as
-- the batch whose effects they include, so a restart resumes exactly where the last commit left off.
CREATE TABLE IF NOT EXISTS engine_state (
    key         VARCHAR PRIMARY KEY,
    value       BLOB,
    batch_seq   BIGINT,
    updated_at  TIMESTAMPTZ
);

-- Store bookkeeping (not part of the public contract).

-- One row per committed micro-batch, written inside that batch's transaction: the durable commit counter
-- (batch_seq survives batches without readings) and the witness that a batch is complete, which lets the
-- store decide after an ambiguous COMMIT failure whether the batch is in. No PRIMARY KEY: the single writer
-- numbers the batches, look-ups by batch_seq are pruned by zone maps (it only grows), and an ART index
-- over one key per commit (hundreds of millions a year at sub-second batches) would cost memory forever.
CREATE TABLE IF NOT EXISTS store_commits (
    batch_seq       BIGINT      NOT NULL,
    committed_at    TIMESTAMPTZ NOT NULL,   -- wall clock
    engine_now_ms   BIGINT      NOT NULL,   -- engine clock of the batch (event time in a replay)
    fresh           INTEGER     NOT NULL,   -- readings inserted from CommitBatch.fresh
    late            INTEGER     NOT NULL,   -- readings inserted from CommitBatch.maybe_dup
    duplicates      INTEGER     NOT NULL,   -- readings of CommitBatch.maybe_dup already stored, dropped
    rejects         INTEGER     NOT NULL,
    signals         INTEGER     NOT NULL,
    alarms          INTEGER     NOT NULL,
    events          INTEGER     NOT NULL,
    notices         INTEGER     NOT NULL
);

-- Newest stored reading per sensor up to batch store_meta['sensor_last_ts_upto'] (folded on the checkpoint
-- interval), so that a restart learns the marks without scanning all of `readings` (max(ts) GROUP BY over
-- years of history would take minutes): it reads this table plus the readings of the batches since.
CREATE TABLE IF NOT EXISTS sensor_last_ts (
    site        VARCHAR NOT NULL,
    tag         VARCHAR NOT NULL,
    last_ts_ms  BIGINT  NOT NULL,
    PRIMARY KEY (site, tag)
);

CREATE TABLE IF NOT EXISTS store_meta (
    key     VARCHAR PRIMARY KEY,
    value   BIGINT
);

-- Point look-ups by the API and the notification log; these tables are small next to `readings`, which
-- deliberately has no index (an ART index would cost insert throughput and memory on the hot path).
CREATE INDEX IF NOT EXISTS alarm_events_alarm_id ON alarm_events (alarm_id);
CREATE INDEX IF NOT EXISTS notices_alarm_id ON notices (alarm_id);
