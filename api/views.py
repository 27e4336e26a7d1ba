"""JSON views of ledger rows for the trading API: orders, fills, balances, deposits.

Pure functions from database rows (mappings) to the JSON the API returns: amounts and prices
as decimal strings in the asset's ledger scale, ids as integers, times in Unix milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api.amounts import format_units
from api.markets import MarketInfo

FINAL_STATES = ("filled", "canceled", "expired", "rejected")


def order_status(state: str, filled_lots: int) -> str:
    """The client-facing status: `partially_filled` is an open order with fills."""
    if state == "open" and filled_lots > 0:
        return "partially_filled"
    return state


def order_view(row: Mapping[str, Any], market: MarketInfo) -> dict[str, Any]:
    filled = int(row["filled_lots"])
    price = row["price_ticks"]
    qty = row["qty_lots"]
    funds = row["funds_notional"]
    received_fee_asset = market.base if row["side"] == "buy" else market.quote
    return {
        "id": int(row["id"]),
        "client_order_id": row["client_order_id"],
        "market": market.symbol,
        "side": row["side"],
        "type": row["type"],
        "time_in_force": row["tif"],
        "post_only": bool(row["post_only"]),
        "price": market.price_str(int(price)) if price is not None else None,
        "quantity": market.qty_str(int(qty)) if qty is not None else None,
        "quote_quantity": market.quote_str(int(funds) * market.quote_units_per_tick_lot) if funds is not None else None,
        "filled_quantity": market.qty_str(filled),
        "filled_quote": market.quote_str(int(row["filled_quote"])),
        "fee": format_units(int(row["fee_paid"]),
                            market.base_decimals if row["side"] == "buy" else market.quote_decimals),
        "fee_asset": received_fee_asset,
        "status": order_status(row["state"], filled),
        "reason": row["done_reason"],
        "created_ms": int(row["ts_ms"]),
    }


def fills_view(row: Mapping[str, Any], user_id: int, market: MarketInfo) -> list[dict[str, Any]]:
    """One fill per side the user took in this trade (two when the user traded with itself)."""
    out: list[dict[str, Any]] = []
    for side in ("buy", "sell"):
        if int(row["buyer" if side == "buy" else "seller"]) != user_id:
            continue
        taker = row["taker_side"] == side
        out.append({
            "trade_id": int(row["seq"]),
            "market": market.symbol,
            "order_id": int(row["buy_order" if side == "buy" else "sell_order"]),
            "side": side,
            "liquidity": "taker" if taker else "maker",
            "price": market.price_str(int(row["price_ticks"])),
            "quantity": market.base_str(int(row["base_amount"])),
            "quote_quantity": market.quote_str(int(row["quote_amount"])),
            "fee": (market.base_str(int(row["buyer_fee"])) if side == "buy"
                    else market.quote_str(int(row["seller_fee"]))),
            "fee_asset": market.base if side == "buy" else market.quote,
            "time_ms": int(row["ts_ms"]),
        })
    return out


def balance_view(row: Mapping[str, Any], decimals: int) -> dict[str, Any]:
    available = int(row["available"])
    frozen = int(row["frozen"])
    return {
        "asset": row["asset"],
        "available": format_units(available, decimals),
        "frozen": format_units(frozen, decimals),
        "total": format_units(available + frozen, decimals),
    }


def deposit_view(row: Mapping[str, Any], decimals: int) -> dict[str, Any]:
    return {
        "id": int(row["id"]),
        "asset": row["asset"],
        "amount": format_units(int(row["amount"]), decimals),
        "txid": row["txid"],
        "output_index": int(row["output_index"]),
        "state": row["state"],
        "credited_ms": int(row["credited_at"].timestamp()) * 1000 + row["credited_at"].microsecond // 1000,
    }
