-- The number of intake shards the intake last ran with. Users map to shards by user_id % shards,
-- so the count may change only while every intake stream is drained (ledger/service.py checks
-- it at start and records the new count).
CREATE TABLE intake_config (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    shards int NOT NULL CHECK (shards >= 1)
);
