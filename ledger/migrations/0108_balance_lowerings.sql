-- A counter of the changes that LOWER an available balance outside the intake: a deposit
-- reversal bumps it in its own transaction (ledger/deposits.py). The intake decides most batches
-- on balances it remembers (ledger/intake_cache.py), which only the intake itself and a reversal
-- can make too high; its write carries the count its balances were read under and is refused
-- (CF004, nothing written) when the counter moved, and the batch is then decided on a fresh read.
CREATE TABLE balance_lowerings (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    n bigint NOT NULL DEFAULT 0
);
INSERT INTO balance_lowerings DEFAULT VALUES;
