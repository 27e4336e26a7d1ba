"""The demo assets (BTC, ETH, USDT) and markets (BTC-USDT, ETH-USDT, ETH-BTC).

Ledger scales: BTC in satoshi (8 decimals), ETH in gwei (9 of its 18 chain decimals, so
int64 holds any balance), USDT in its own 6 decimals. Each market's tick and lot are
chosen so that one tick x one lot is a whole number of quote ledger units.
`seed_demo` runs in the caller's transaction and is idempotent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

# code, chain, chain_decimals, ledger_decimals, required_confirmations,
# min_deposit, withdrawal_fee, min_withdrawal (ledger units)
DEMO_ASSETS: tuple[tuple[str, str, int, int, int, int, int, int], ...] = (
    ("BTC", "btc", 8, 8, 2, 10_000, 10_000, 20_000),
    ("ETH", "eth", 18, 9, 3, 1_000_000, 1_000_000, 2_000_000),
    ("USDT", "eth", 6, 6, 3, 1_000_000, 1_000_000, 2_000_000),
)

# symbol, base, quote, tick, lot, base_units_per_lot, quote_units_per_tick_lot,
# min_notional (quote ledger units), maker_fee_bps, taker_fee_bps
DEMO_MARKETS: tuple[tuple[str, str, str, str, str, int, int, int, int, int], ...] = (
    ("BTC-USDT", "BTC", "USDT", "0.1", "0.00001", 1_000, 1, 10_000_000, 10, 20),
    ("ETH-USDT", "ETH", "USDT", "0.01", "0.0001", 100_000, 1, 10_000_000, 10, 20),
    ("ETH-BTC", "ETH", "BTC", "0.00001", "0.001", 1_000_000, 1, 10_000, 10, 20),
)


async def seed_demo(conn: asyncpg.Connection, *, network: str, usdt_contract: str | None) -> None:
    """Insert the demo assets and markets unless present.

    `network` is stored on every asset (e.g. "regtest", "mainnet"). `usdt_contract` is the
    ERC-20 address of USDT on that network (stored lowercase); None leaves it unset, and a
    later call with an address fills it in.
    """
    contract = usdt_contract.lower() if usdt_contract else None
    for code, chain, chain_dec, ledger_dec, confs, min_dep, wd_fee, min_wd in DEMO_ASSETS:
        token = contract if code == "USDT" else None
        await conn.execute(
            """
            INSERT INTO assets AS a (code, chain, network, chain_decimals, ledger_decimals, token_contract,
                                     required_confirmations, min_deposit, withdrawal_fee, min_withdrawal)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (code) DO UPDATE SET token_contract = COALESCE(EXCLUDED.token_contract, a.token_contract)
            """,
            code, chain, network, chain_dec, ledger_dec, token, confs, min_dep, wd_fee, min_wd,
        )
    for symbol, base, quote, tick, lot, bupl, qutl, min_notional, maker, taker in DEMO_MARKETS:
        await conn.execute(
            """
            INSERT INTO markets (symbol, base, quote, tick, lot, base_units_per_lot, quote_units_per_tick_lot,
                                 min_notional, maker_fee_bps, taker_fee_bps)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (symbol) DO NOTHING
            """,
            symbol, base, quote, tick, lot, bupl, qutl, min_notional, maker, taker,
        )
