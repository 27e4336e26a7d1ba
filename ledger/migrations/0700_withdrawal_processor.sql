-- withdrawals processor: the in-flight life of each held withdrawal, every transaction built for
-- it (persisted BEFORE it is broadcast, so a restart re-broadcasts and never rebuilds), the
-- inputs those transactions spend, the Ethereum nonce counter and the Bitcoin change index.

-- One row per withdrawal the processor has taken up (withdrawals.state stays 'held' meanwhile).
-- stage: new | review (refused by the hot policy, waits for an operator) | cold (exported for
-- offline signing) | signed | broadcast | done (settled) | failed (released)
CREATE TABLE wd_proc (
    withdrawal_id bigint PRIMARY KEY REFERENCES withdrawals(id),
    chain text NOT NULL,
    stage text NOT NULL CHECK (stage IN ('new', 'review', 'cold', 'signed', 'broadcast', 'done', 'failed')),
    path text NULL CHECK (path IN ('hot', 'cold')),
    reason text NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wd_proc_open ON wd_proc (stage) WHERE stage NOT IN ('done', 'failed');

-- Every transaction built: for a withdrawal (withdrawal_id set) or an internal move (sweep,
-- gas funding, hot -> cold). state: unsigned (built, waits for a signature: cold path) |
-- signed (persisted, not yet accepted by a node) | broadcast | confirmed | replaced (a fee
-- bump superseded it; it may still confirm instead) | failed (can never confirm) | abandoned
-- (never signed or broadcast; its inputs / nonce were given back).
CREATE TABLE wd_txs (
    id bigserial PRIMARY KEY,
    withdrawal_id bigint NULL REFERENCES withdrawals(id),
    purpose text NOT NULL CHECK (purpose IN ('withdrawal', 'sweep', 'gas', 'cold')),
    chain text NOT NULL,
    network text NOT NULL,
    asset text NOT NULL,
    destination text NOT NULL,
    amount_chain numeric(78, 0) NOT NULL CHECK (amount_chain > 0),
    fee_chain numeric(78, 0) NOT NULL DEFAULT 0,       -- BTC: exact fee in sat; ETH: max fee (gas * max_fee_per_gas)
    fee_rate numeric(78, 0) NULL,                     -- BTC: milli-sat per vB; ETH: max_fee_per_gas in wei
    tip_wei numeric(78, 0) NULL,                      -- ETH: max_priority_fee_per_gas
    from_address text NULL,                           -- ETH sender
    nonce bigint NULL,                                -- ETH nonce
    unsigned text NOT NULL,                           -- base64 PSBT or transaction JSON
    signed text NULL,                                 -- raw signed transaction (hex)
    txid text NULL,
    state text NOT NULL CHECK (state IN ('unsigned', 'signed', 'broadcast', 'confirmed', 'replaced', 'failed',
                                         'abandoned')),
    replaces bigint NULL REFERENCES wd_txs(id),
    generation int NOT NULL DEFAULT 0,                -- 0 = first build, n = n-th fee bump
    reason text NULL,
    broadcasts int NOT NULL DEFAULT 0,
    first_broadcast_at timestamptz NULL,
    last_broadcast_at timestamptz NULL,
    confirmed_height bigint NULL,
    network_fee_chain numeric(78, 0) NULL,            -- fee actually paid, once confirmed
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX wd_txs_txid ON wd_txs (chain, network, txid) WHERE txid IS NOT NULL;
CREATE INDEX wd_txs_withdrawal ON wd_txs (withdrawal_id);
CREATE INDEX wd_txs_live ON wd_txs (state) WHERE state IN ('unsigned', 'signed', 'broadcast', 'replaced');
-- At most one live (not replaced/failed/abandoned) transaction per Ethereum nonce and sender.
CREATE UNIQUE INDEX wd_txs_nonce ON wd_txs (chain, network, from_address, nonce)
    WHERE nonce IS NOT NULL AND state IN ('unsigned', 'signed', 'broadcast', 'confirmed');

-- Bitcoin outpoints reserved by a live transaction (a fee bump moves them to its replacement),
-- so two transactions never pick the same coin.
CREATE TABLE wd_btc_inputs (
    network text NOT NULL,
    outpoint text NOT NULL,                           -- txid:vout
    tx_id bigint NOT NULL REFERENCES wd_txs(id),
    PRIMARY KEY (network, outpoint)
);

-- Ethereum nonce manager: the next nonce of each hot sender, and nonces given back by a
-- transaction that was abandoned before broadcast (reused first, so none is ever skipped).
CREATE TABLE wd_eth_nonces (
    network text NOT NULL,
    address text NOT NULL,                            -- lower-case 0x..
    next_nonce bigint NOT NULL CHECK (next_nonce >= 0),
    PRIMARY KEY (network, address)
);
CREATE TABLE wd_eth_free_nonces (
    network text NOT NULL,
    address text NOT NULL,
    nonce bigint NOT NULL,
    PRIMARY KEY (network, address, nonce)
);

-- Bitcoin change addresses handed out (m/84'/c'/0'/1/index of the hot account).
CREATE TABLE wd_btc_change (
    network text NOT NULL,
    change_index int NOT NULL,
    address text NOT NULL,
    derivation_path text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (network, change_index),
    UNIQUE (network, address)
);
