-- The engine command behind each settled event run: per market, the seq of the FIRST event each
-- command produced (every command yields at least one event and a command's events are
-- contiguous), what it was (a place or a cancel) and the order it names. Written by the
-- settlement consumer in the same transaction as the batch it settles. After Redis lost
-- engine output that settlement had already applied (checkpoint seq < settled seq), the
-- commands with first_seq in (checkpoint, settled] are re-forwarded to the engine in
-- first_seq order: the original interleaving of the intake shards (ledger/recovery.py).
-- oid NULL: a command whose first event was a self-trade-prevention cancel of a resting
-- maker and whose taker is not yet known (the batch ended inside it); the next batch fills it.
CREATE TABLE settled_commands (
    market text NOT NULL REFERENCES markets(symbol),
    first_seq bigint NOT NULL,
    is_cancel boolean NOT NULL,
    oid bigint NULL,
    PRIMARY KEY (market, first_seq)
);
