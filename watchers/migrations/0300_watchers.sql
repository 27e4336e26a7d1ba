-- watchers: cursor, recent block-hash chain, insert-only deposit observations, deposit state,
-- alerts, and the service's own broadcast transactions to follow.

CREATE TABLE watcher_cursors (
    chain text NOT NULL,
    network text NOT NULL,
    height bigint NOT NULL,
    block_hash text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, network)
);

-- The recent block-hash chain (pruned to the newest N blocks); rows above a fork point are deleted.
CREATE TABLE watcher_blocks (
    chain text NOT NULL,
    network text NOT NULL,
    height bigint NOT NULL,
    block_hash text NOT NULL,
    parent_hash text,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, network, height)
);

-- Insert-only: every time a payment to a deposit address is seen in a block, one row.
CREATE TABLE watcher_observations (
    id bigserial PRIMARY KEY,
    chain text NOT NULL,
    network text NOT NULL,
    deposit_key text NOT NULL,
    txid text NOT NULL,
    output_index integer NOT NULL,
    address text NOT NULL,
    user_id bigint NOT NULL,
    asset text NOT NULL,
    amount_chain numeric(78, 0) NOT NULL CHECK (amount_chain >= 0),
    block_height bigint NOT NULL,
    block_hash text NOT NULL,
    observed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (deposit_key, block_hash)
);
CREATE INDEX watcher_observations_key ON watcher_observations (deposit_key);

-- Current state of each deposit (one row per deposit_key).
-- status: confirming -> credited; dust (recorded, never credited); orphaned (its block left the
-- chain, waiting to be re-mined) -> dropped (not re-found after catching up);
-- credited_orphaned (credited, its block left the chain) -> credited again if re-found, else reversed.
CREATE TABLE watcher_deposits (
    deposit_key text PRIMARY KEY,
    chain text NOT NULL,
    network text NOT NULL,
    asset text NOT NULL,
    user_id bigint NOT NULL,
    address text NOT NULL,
    txid text NOT NULL,
    output_index integer NOT NULL,
    amount_chain numeric(78, 0) NOT NULL,
    amount_ledger bigint NOT NULL CHECK (amount_ledger >= 0),
    status text NOT NULL CHECK (status IN
        ('confirming', 'credited', 'dust', 'orphaned', 'dropped', 'credited_orphaned', 'reversed')),
    block_height bigint,
    block_hash text,
    confirmations integer NOT NULL DEFAULT 0,
    credit_generation integer NOT NULL DEFAULT 0,
    credited_key text,
    credited_at timestamptz,
    reversed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX watcher_deposits_open ON watcher_deposits (chain, network, status)
    WHERE status IN ('confirming', 'orphaned', 'credited_orphaned');
CREATE INDEX watcher_deposits_block ON watcher_deposits (chain, network, block_height);

CREATE TABLE watcher_alerts (
    id bigserial PRIMARY KEY,
    chain text NOT NULL,
    network text NOT NULL,
    kind text NOT NULL,
    deposit_key text,
    message text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The service's own broadcast transactions (withdrawals, sweeps): the watcher records the block
-- they are mined in and their confirmations; a reorg puts them back to pending.
CREATE TABLE watcher_followed_txs (
    chain text NOT NULL,
    network text NOT NULL,
    txid text NOT NULL,
    purpose text NOT NULL,
    required_confirmations integer NOT NULL CHECK (required_confirmations >= 1),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'confirming', 'confirmed')),
    block_height bigint,
    block_hash text,
    confirmations integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, network, txid)
);
CREATE INDEX watcher_followed_open ON watcher_followed_txs (chain, network) WHERE status <> 'confirmed';
