"""Pure policy evaluation: order, caps, windows, allow-lists, default deny, configuration."""

from __future__ import annotations

import pytest

from signer.errors import PolicyError
from signer.policy import Policy, Rule, SignRequest

POLICY = Policy.from_config({"rules": [
    {"name": "btc-single", "asset": "BTC", "max_single_chain_units": "1000000"},
    {"name": "btc-hour", "asset": "BTC", "window_seconds": 3600, "window_cap_chain_units": 2_000_000},
    {"name": "btc-day", "asset": "BTC", "window_seconds": 86400, "window_cap_chain_units": "3000000"},
    {"name": "eth-allow", "asset": "ETH", "allowed_destinations": ["0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"]},
    {"name": "eth-single", "asset": "ETH", "max_single_chain_units": str(10**18)},
]})


def req(asset: str, amount: int, dest: str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080") -> SignRequest:
    return SignRequest("r1", "withdrawals", asset, "btc" if asset == "BTC" else "eth", dest, amount)


def test_within_all_rules_names_them() -> None:
    d = POLICY.evaluate(req("BTC", 500_000), {3600: 0, 86400: 0})
    assert d.approved and d.rule == "btc-single,btc-hour,btc-day"


def test_single_cap_first_in_order() -> None:
    d = POLICY.evaluate(req("BTC", 1_000_001), {3600: 10**9, 86400: 10**9})
    assert not d.approved and d.rule == "btc-single" and "single-transaction cap of 1000000" in d.reason


def test_windows() -> None:
    assert POLICY.evaluate(req("BTC", 1_000_000), {3600: 1_000_000, 86400: 1_000_000}).approved
    d = POLICY.evaluate(req("BTC", 1_000_000), {3600: 1_000_001, 86400: 1_000_001})
    assert not d.approved and d.rule == "btc-hour"
    d = POLICY.evaluate(req("BTC", 1_000_000), {3600: 0, 86400: 2_000_001})
    assert not d.approved and d.rule == "btc-day"
    assert POLICY.windows_for("BTC") == (3600, 86400)


def test_allow_list_case_insensitive_for_hex() -> None:
    ok = POLICY.evaluate(req("ETH", 10, "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"), {})
    assert ok.approved and ok.rule == "eth-allow,eth-single"
    d = POLICY.evaluate(req("ETH", 10, "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"), {})
    assert not d.approved and d.rule == "eth-allow" and "allow-list" in d.reason


def test_default_deny_and_nonpositive() -> None:
    d = POLICY.evaluate(req("USDT", 1), {})
    assert not d.approved and d.rule is None and "no hot-signing policy" in d.reason
    assert not POLICY.evaluate(req("BTC", 0), {3600: 0, 86400: 0}).approved


@pytest.mark.parametrize("bad", [
    {"rules": [{"name": "x", "asset": "BTC"}]},
    {"rules": [{"name": "x", "asset": "BTC", "window_seconds": 60}]},
    {"rules": [{"name": "x", "asset": "BTC", "max_single_chain_units": 1.5}]},
    {"rules": [{"name": "x", "asset": "BTC", "max_single_chain_units": 1, "colour": "red"}]},
    {"rules": [{"name": "x", "asset": "BTC", "max_single_chain_units": 1},
               {"name": "x", "asset": "ETH", "max_single_chain_units": 1}]},
    {"rules": "none"},
])
def test_bad_config(bad: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        Policy.from_config(bad)


def test_rule_dataclass_validation() -> None:
    with pytest.raises(PolicyError):
        Policy([Rule("w", "BTC", window_seconds=0, window_cap_chain_units=1)])
