-- K-lines (candles) of closed buckets, written by `coffer matcher marketdata` (matcher/marketdata.py).
-- Engine units, exact integers: prices in ticks, base volume in lots, quote volume in
-- tick-lot units (sum of price_ticks * qty_lots); convert with the market's tick and lot.
-- Buckets are UTC-aligned; a 1w bucket starts on Monday 00:00 UTC. Self-trades are excluded.
CREATE TABLE klines (
    market text NOT NULL,
    interval text NOT NULL CHECK (interval IN ('1m', '5m', '15m', '1h', '4h', '1d', '1w')),
    bucket_start_ms bigint NOT NULL,
    open_ticks bigint NOT NULL,
    high_ticks bigint NOT NULL,
    low_ticks bigint NOT NULL,
    close_ticks bigint NOT NULL,
    volume_lots bigint NOT NULL,
    quote_volume numeric(38, 0) NOT NULL,
    trades integer NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (market, interval, bucket_start_ms)
);
