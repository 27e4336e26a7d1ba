-- signer: hot-signing policy state. Every decision (approved or refused) is a row, so caps and
-- velocity windows hold across restarts; one lock row per asset serialises decisions.
CREATE TABLE signer_policy_locks (
    asset text PRIMARY KEY
);

CREATE TABLE signer_decisions (
    id bigserial PRIMARY KEY,
    request_id text NOT NULL UNIQUE,
    decided_at timestamptz NOT NULL,
    requested_by text NOT NULL,
    asset text NOT NULL,
    chain text NOT NULL,
    destination text NOT NULL,
    amount_chain_units numeric(78, 0) NOT NULL,
    approved boolean NOT NULL,
    rule text NULL,
    reason text NOT NULL,
    signer_fingerprint text NOT NULL,
    tx_digest text NOT NULL,       -- sha256 of the unsigned transaction the decision is about
    txid text NULL                 -- set once signed
);

CREATE INDEX signer_decisions_window ON signer_decisions (asset, decided_at) WHERE approved;
