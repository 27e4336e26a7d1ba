-- The engine commands behind the settled events (ledger/recovery.py), one row per settlement batch
-- instead of one per command: a batch's new command rows as one bigint[3][k] (first_seq,
-- is_cancel 0/1, oid; NULL: the taker is not yet known), stored without compression. One row per
-- command cost a settlement batch about 8.4 ms of its 70 (about 4,900 rows, bench.ledger,
-- auto_explain). A later batch that learns a placeholder's taker adds it to
-- settled_command_takers (rare: a command begun by a self-trade-prevention cancel and cut by a
-- batch). Rows are found by their last first_seq (recovery reads the runs after a checkpoint).
CREATE TABLE settled_command_runs (
    market text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    cmds bigint[] NOT NULL,
    PRIMARY KEY (market, last_seq)
);
ALTER TABLE settled_command_runs ALTER COLUMN cmds SET STORAGE EXTERNAL;
CREATE TABLE settled_command_takers (
    market text NOT NULL,
    first_seq bigint NOT NULL,
    oid bigint NOT NULL,
    PRIMARY KEY (market, first_seq)
);
INSERT INTO settled_command_runs (market, first_seq, last_seq, cmds)
SELECT market, first_seq, first_seq, ARRAY[[first_seq], [is_cancel::int::bigint], [oid]] FROM settled_commands;
DROP TABLE settled_commands;
-- Every settled command, one row each, as the table of migration 0102 had them (for audits and
-- ad-hoc reads: it unnests every run; the hot paths read the runs they need).
CREATE VIEW settled_commands AS
SELECT r.market, c.first_seq, c.is_cancel <> 0 AS is_cancel, coalesce(c.oid, t.oid) AS oid
  FROM settled_command_runs r
 CROSS JOIN LATERAL unnest(r.cmds[1:1], r.cmds[2:2], r.cmds[3:3]) AS c(first_seq, is_cancel, oid)
  LEFT JOIN settled_command_takers t ON t.market = r.market AND t.first_seq = c.first_seq;

-- One settlement batch, written by one call (ledger/settlement.py, `_write_once`).
--
-- The settlement consumer sends a batch's write while the batch before it is still being written.
-- This function first locks the market's offset row, which waits for that batch's commit, and
-- refuses (CF003, nothing written) unless the row then holds the seq the batch was computed on.
-- Each statement after the lock takes its own snapshot (a VOLATILE function in READ COMMITTED), so
-- it sees the batch before as committed: the orders both batches change are updated directly. A
-- single statement that waits inside re-checks each such order's newer version row by row; its
-- order updates took twice as long (bench.ledger, auto_explain: 37-48 ms against 23-25 ms for
-- about 4,900 orders).
--
-- Arguments (2-D arrays: asyncpg checks only the first row's elements when encoding them):
--   p_trades     bigint[12][k]: seq, buy_order, sell_order, buyer, seller, price_ticks, qty_lots,
--                base_amount, quote_amount, buyer_fee, seller_fee, ts_ms; p_sides: taker sides
--   p_orders     bigint[5][k]: id, frozen_remaining, filled_lots, filled_quote, fee_paid;
--                p_order_texts text[2][k]: state, done_reason
--   p_commands   bigint[3][k]: first_seq, is_cancel (0/1), oid (NULL: taker not yet known), in
--                first_seq order: the batch's run of settled_command_runs
--   p_completed  bigint[2][k]: first_seq, oid of placeholders an earlier batch recorded
--   p_balances   bigint[3][k]: user, available delta, frozen delta, sorted by (user, asset), with
--                p_assets; rows are locked in that order (ledger/repo.py on lock order)
-- Returns the new balance of every row it changed.
CREATE FUNCTION ledger_settle_batch(
    p_market text, p_stream_id text, p_last_seq bigint, p_base_seq bigint,
    p_trades bigint[], p_sides text[], p_orders bigint[], p_order_texts text[],
    p_commands bigint[], p_completed bigint[], p_balances bigint[], p_assets text[]
) RETURNS TABLE (b_user bigint, b_asset text, b_available bigint, b_frozen bigint)
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    seq bigint;
BEGIN
    SELECT o.last_seq INTO seq FROM settlement_offsets o WHERE o.market = p_market FOR UPDATE;
    IF seq IS DISTINCT FROM p_base_seq THEN
        PERFORM ledger_refuse('CF003', format('the settlement offset moved (at seq %s, the batch was computed on %s)',
                                              seq, p_base_seq));
    END IF;
    UPDATE settlement_offsets SET stream_id = p_stream_id, last_seq = p_last_seq WHERE market = p_market;
    IF cardinality(p_trades) > 0 THEN
        INSERT INTO trades (market, seq, buy_order, sell_order, buyer, seller, price_ticks, qty_lots, base_amount,
                            quote_amount, buyer_fee, seller_fee, ts_ms, taker_side)
        SELECT p_market, d.* FROM unnest(p_trades[1:1], p_trades[2:2], p_trades[3:3], p_trades[4:4], p_trades[5:5],
                                         p_trades[6:6], p_trades[7:7], p_trades[8:8], p_trades[9:9], p_trades[10:10],
                                         p_trades[11:11], p_trades[12:12], p_sides) AS d;
    END IF;
    IF cardinality(p_orders) > 0 THEN
        UPDATE orders o SET frozen_remaining = d.fr, filled_lots = d.fl, filled_quote = d.fq, fee_paid = d.fee,
                            state = d.st, done_reason = d.dr, updated_at = now()
          FROM unnest(p_orders[1:1], p_orders[2:2], p_orders[3:3], p_orders[4:4], p_orders[5:5],
                      p_order_texts[1:1], p_order_texts[2:2]) AS d(id, fr, fl, fq, fee, st, dr)
         WHERE o.id = d.id;
    END IF;
    IF cardinality(p_commands) > 0 THEN
        INSERT INTO settled_command_runs (market, first_seq, last_seq, cmds)
        VALUES (p_market, p_commands[1][1], p_commands[1][array_length(p_commands, 2)], p_commands);
    END IF;
    IF cardinality(p_completed) > 0 THEN
        INSERT INTO settled_command_takers (market, first_seq, oid)
        SELECT p_market, t.s, t.o FROM unnest(p_completed[1:1], p_completed[2:2]) AS t(s, o);
    END IF;
    IF cardinality(p_balances) > 0 THEN
        RETURN QUERY
        WITH d AS MATERIALIZED (
            SELECT * FROM unnest(p_balances[1:1], p_assets, p_balances[2:2], p_balances[3:3]) AS d(u, a, av, fr)
        ), j AS (
            INSERT INTO balance_journal (user_id, asset, d_available, d_frozen, kind, ref_id)
            SELECT u, a, av, fr, 'settle', p_last_seq FROM d
        )
        INSERT INTO balances AS b (user_id, asset, available, frozen)
        SELECT u, a, av, fr FROM d
        ON CONFLICT (user_id, asset) DO UPDATE
            SET available = b.available + EXCLUDED.available, frozen = b.frozen + EXCLUDED.frozen
        RETURNING b.user_id, b.asset, b.available, b.frozen;
    END IF;
END
$$;
