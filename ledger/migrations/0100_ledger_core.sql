-- Ledger core: the book of record. Every amount is an exact integer in the asset's ledger
-- unit (satoshi for BTC, gwei for ETH, 1e-6 for USDT). Balances, order reservations and
-- trade amounts are bounded by a bigint balance (the intake checks it before inserting),
-- so bigint holds them; aggregates in the audit are summed as NUMERIC.

CREATE TABLE users (
    id bigint PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE assets (
    code text PRIMARY KEY,
    chain text NOT NULL CHECK (chain IN ('btc', 'eth')),
    network text NOT NULL,
    chain_decimals int NOT NULL CHECK (chain_decimals >= 0),
    ledger_decimals int NOT NULL CHECK (ledger_decimals >= 0 AND ledger_decimals <= chain_decimals),
    token_contract text NULL CHECK (token_contract IS NULL OR token_contract = lower(token_contract)),
    required_confirmations int NOT NULL CHECK (required_confirmations >= 1),
    min_deposit bigint NOT NULL CHECK (min_deposit >= 0),
    withdrawal_fee bigint NOT NULL CHECK (withdrawal_fee >= 0),
    min_withdrawal bigint NOT NULL CHECK (min_withdrawal >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A spot market. Engine prices are integer ticks, quantities integer lots:
--   base ledger units  = lots  * base_units_per_lot
--   quote ledger units = ticks * lots * quote_units_per_tick_lot
-- `tick` / `lot` are the decimal strings of one tick (quote per base) and one lot (base)
-- for the API edge; `min_notional` is in quote ledger units.
CREATE TABLE markets (
    symbol text PRIMARY KEY,
    base text NOT NULL REFERENCES assets(code),
    quote text NOT NULL REFERENCES assets(code),
    tick text NOT NULL,
    lot text NOT NULL,
    base_units_per_lot bigint NOT NULL CHECK (base_units_per_lot > 0),
    quote_units_per_tick_lot bigint NOT NULL CHECK (quote_units_per_tick_lot > 0),
    min_notional bigint NOT NULL CHECK (min_notional >= 0),
    maker_fee_bps int NOT NULL CHECK (maker_fee_bps BETWEEN 0 AND 10000),
    taker_fee_bps int NOT NULL CHECK (taker_fee_bps BETWEEN 0 AND 10000),
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (base <> quote)
);

-- available may go negative only through a deposit reversal; frozen never. (frozen >= 0 is
-- enforced by the arithmetic and checked by the audit, not by a CHECK: PostgreSQL checks
-- the proposed row of INSERT ... ON CONFLICT DO UPDATE, which carries the signed deltas.)
CREATE TABLE balances (
    user_id bigint NOT NULL REFERENCES users(id),
    asset text NOT NULL REFERENCES assets(code),
    available bigint NOT NULL DEFAULT 0,
    frozen bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, asset)
);

-- The journal that explains every balance change: the audit recomputes balances from it.
-- kind: deposit | reversal | withdraw_settle | withdraw_release (one row per operation, ref_id =
--       the deposit or withdrawal id) | intake (a batch's net freezes and withdrawal holds per
--       user and asset, ref_id = last intake id) | settle (a batch's net trade and release
--       effects per user and asset, ref_id = last engine seq).
CREATE TABLE balance_journal (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL,
    asset text NOT NULL,
    d_available bigint NOT NULL,
    d_frozen bigint NOT NULL,
    kind text NOT NULL,
    ref_id bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE order_ids;

-- state: pending (frozen, forwarded, not yet seen by the engine) | open | filled |
--        canceled | expired | rejected.  frozen_remaining is what this order still holds
--        in frozen_asset; it is 0 in every final state.
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    market text NOT NULL REFERENCES markets(symbol),
    client_order_id text NULL,
    side text NOT NULL CHECK (side IN ('buy', 'sell')),
    type text NOT NULL CHECK (type IN ('limit', 'market')),
    tif text NOT NULL,
    post_only boolean NOT NULL,
    stp text NOT NULL,
    price_ticks bigint NULL,
    qty_lots bigint NULL,
    funds_notional bigint NULL,
    frozen_asset text NOT NULL,
    frozen_total bigint NOT NULL,
    frozen_remaining bigint NOT NULL CHECK (frozen_remaining >= 0),
    filled_lots bigint NOT NULL DEFAULT 0,
    filled_quote bigint NOT NULL DEFAULT 0,
    fee_paid bigint NOT NULL DEFAULT 0,
    state text NOT NULL,
    done_reason text NULL,
    shard int NOT NULL,
    iid bigint NOT NULL,
    ts_ms bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, client_order_id),
    UNIQUE (shard, iid)
) WITH (fillfactor = 70);
-- No index mentions the columns settlement updates (state, amounts), and pages keep free
-- space, so those updates are HOT (no index writes): settlement updates two orders per trade.
CREATE INDEX orders_user_market ON orders (user_id, market);

-- Cancels forwarded to the engine, kept so they can be re-forwarded after a Redis loss.
CREATE TABLE cancel_requests (
    shard int NOT NULL,
    iid bigint NOT NULL,
    market text NOT NULL,
    order_id bigint NOT NULL,
    user_id bigint NOT NULL,
    ts_ms bigint NOT NULL,
    PRIMARY KEY (shard, iid)
);
CREATE INDEX cancel_requests_market ON cancel_requests (market, shard, iid);

-- One row per engine trade; (market, seq) makes settlement idempotent.
-- buyer_fee is in base units (the buyer receives base), seller_fee in quote units.
CREATE TABLE trades (
    market text NOT NULL,
    seq bigint NOT NULL,
    buy_order bigint NOT NULL,
    sell_order bigint NOT NULL,
    buyer bigint NOT NULL,
    seller bigint NOT NULL,
    taker_side text NOT NULL,
    price_ticks bigint NOT NULL,
    qty_lots bigint NOT NULL,
    base_amount bigint NOT NULL,
    quote_amount bigint NOT NULL,
    buyer_fee bigint NOT NULL,
    seller_fee bigint NOT NULL,
    ts_ms bigint NOT NULL,
    PRIMARY KEY (market, seq)
);

-- state: credited | reversed. amount in ledger units.
CREATE TABLE deposits (
    id bigserial PRIMARY KEY,
    deposit_key text NOT NULL UNIQUE,
    user_id bigint NOT NULL REFERENCES users(id),
    asset text NOT NULL REFERENCES assets(code),
    amount bigint NOT NULL CHECK (amount > 0),
    txid text NOT NULL,
    output_index int NOT NULL,
    state text NOT NULL CHECK (state IN ('credited', 'reversed')),
    reverse_reason text NULL,
    credited_at timestamptz NOT NULL DEFAULT now(),
    reversed_at timestamptz NULL
);

-- amount is what leaves the user's balance (ledger units), fee the part of it the exchange
-- keeps; amount - fee goes on chain. state: held (any in-flight state of the withdrawal
-- processor counts as held) | settled | released. Only settled and released are final.
CREATE TABLE withdrawals (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    asset text NOT NULL REFERENCES assets(code),
    amount bigint NOT NULL CHECK (amount > 0),
    fee bigint NOT NULL CHECK (fee >= 0 AND fee < amount),
    address text NOT NULL,
    request_id text NULL UNIQUE,
    state text NOT NULL DEFAULT 'held',
    txid text NULL,
    reason text NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX withdrawals_held ON withdrawals (user_id) WHERE state NOT IN ('settled', 'released');

-- Stream offsets, stored in the same transaction as the effects they describe.
CREATE TABLE intake_offsets (
    shard int PRIMARY KEY,
    stream_id text NOT NULL DEFAULT '0-0',
    last_iid bigint NOT NULL DEFAULT 0,
    batch_first_iid bigint NOT NULL DEFAULT 1
);

CREATE TABLE settlement_offsets (
    market text PRIMARY KEY,
    stream_id text NOT NULL DEFAULT '0-0',
    last_seq bigint NOT NULL DEFAULT 0
);
