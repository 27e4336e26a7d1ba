"""Pure validation of amounts and order requests: every bad field named with a reason."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.amounts import format_units, parse_decimal, to_steps, to_units
from api.errors import ValidationError
from api.markets import MarketInfo, validate_order

BTC_USDT = MarketInfo(
    "BTC-USDT", "BTC", "USDT", parse_decimal("tick", "0.1"), parse_decimal("lot", "0.00001"),
    1_000, 1, 10_000_000, 10, 20, 8, 6, True,
)
MARKETS = {"BTC-USDT": BTC_USDT}


@given(st.integers(min_value=0, max_value=10**20), st.integers(min_value=0, max_value=18))
def test_format_then_parse_round_trips(units: int, decimals: int) -> None:
    text = format_units(units, decimals)
    assert to_units("x", parse_decimal("x", text), decimals) == units


def test_decimal_parsing_refuses_non_decimal_strings() -> None:
    for raw, reason in [(1.5, "not a JSON float"), ("1e5", "not a decimal"), ("-1", "positive"),
                        ("", "not a decimal"), (None, "required"), ("1.", "not a decimal"), ("abc", "not a decimal")]:
        with pytest.raises(ValidationError) as info:
            parse_decimal("price", raw)
        assert info.value.field == "price"
        assert reason.split()[-1] in info.value.reason
    assert to_steps("price", parse_decimal("p", "30000.50"), BTC_USDT.tick, "tick") == 300005
    with pytest.raises(ValidationError, match=r"multiple of the tick 0\.1"):
        to_steps("price", parse_decimal("p", "30000.05"), BTC_USDT.tick, "tick")
    with pytest.raises(ValidationError, match="too many decimals: at most 6"):
        to_units("quote_quantity", parse_decimal("q", "1.0000001"), 6)


def _order(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"market": "BTC-USDT", "side": "buy", "type": "limit", "price": "30000.0",
                            "quantity": "0.01"}
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


def test_limit_order_in_engine_units() -> None:
    intent = validate_order(_order(), MARKETS)
    assert (intent.price_ticks, intent.qty_lots, intent.funds_notional) == (300000, 1000, None)
    assert intent.tif == "GTC" and intent.stp == "none"
    buy = validate_order({"market": "btc-usdt", "side": "buy", "type": "market", "quote_quantity": "25.5"}, MARKETS)
    assert buy.funds_notional == 25_500_000 and buy.qty_lots is None and buy.tif == "IOC"


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"market": "DOGE-USDT"}, "market", "unknown market"),
        ({"market": None}, "market", "required"),
        ({"side": "hold"}, "side", "one of buy, sell"),
        ({"side": None}, "side", "required"),
        ({"price": None}, "price", "required"),
        ({"price": "0"}, "price", "greater than zero"),
        ({"price": "-5"}, "price", "positive"),
        ({"price": 30000}, "price", "decimal string"),
        ({"price": "30000.05"}, "price", "multiple of the tick"),
        ({"quantity": "0.000001"}, "quantity", "multiple of the lot"),
        ({"quantity": "0"}, "quantity", "greater than zero"),
        ({"quantity": "0.00001"}, "quantity", "minimum notional"),
        ({"quote_quantity": "10"}, "quote_quantity", "only for market buys"),
        ({"time_in_force": "GTD"}, "time_in_force", "one of GTC"),
        ({"post_only": "yes"}, "post_only", "true or false"),
        ({"client_order_id": "x" * 40}, "client_order_id", "1-36"),
        ({"leverage": "10"}, "leverage", "unknown field"),
        ({"type": "market", "price": None, "quantity": None}, "quote_quantity", "quote amount"),
        ({"type": "market", "side": "sell", "price": None, "quantity": None}, "quantity", "required"),
        ({"type": "market", "price": None}, "quantity", "give quote_quantity"),
        ({"type": "market", "price": None, "quote_quantity": "1.0000001", "quantity": None},
         "quote_quantity", "too many decimals"),
        ({"type": "market", "price": "1"}, "price", "must not be given"),
    ],
)
def test_bad_order_fields_are_named(over: dict[str, Any], field: str, words: str) -> None:
    body = _order()
    body.update(over)
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(ValidationError) as info:
        validate_order(body, MARKETS)
    assert info.value.field == field
    assert words in info.value.reason


def test_body_must_be_an_object() -> None:
    with pytest.raises(ValidationError, match="JSON object"):
        validate_order(["BTC-USDT"], MARKETS)
