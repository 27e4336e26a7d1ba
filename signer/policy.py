"""Hot-signing policy: ordered rules per asset, evaluated without I/O.

A `Rule` belongs to one asset and may carry any of: a single-transaction cap, a rolling-window
(velocity) cap over `window_seconds`, and a destination allow-list. For a request, the asset's
rules are checked in their configured order; the first rule the request breaks refuses it and
is named in the decision; a request that passes every rule is approved, and the decision names
all of them. An asset without rules is refused (default deny), so anything unexpected goes to
the cold path. Amounts are integers in the chain's smallest unit (sat, wei, token base units):
what the signer can read from the transaction it signs, not what it is told. The amounts
already approved inside each window are supplied by the caller (the PostgreSQL store), which
makes evaluation a pure function of (rules, request, usage).

Configuration (JSON; e.g. the file named by COFFER_SIGNER_POLICY_FILE)::

    {"rules": [
      {"name": "btc-small", "asset": "BTC", "max_single_chain_units": "1000000"},
      {"name": "btc-daily", "asset": "BTC", "window_seconds": 86400, "window_cap_chain_units": "5000000"},
      {"name": "eth-allow", "asset": "ETH", "allowed_destinations": ["0xAbC..."]}]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from signer.errors import PolicyError


def normalize_destination(address: str) -> str:
    """Addresses compared case-insensitively where the encoding is (0x-hex, bech32), exactly otherwise."""
    lowered = address.strip().lower()
    if lowered.startswith(("0x", "bc1", "tb1", "bcrt1")):
        return lowered
    return address.strip()


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    asset: str
    max_single_chain_units: int | None = None
    window_seconds: int | None = None
    window_cap_chain_units: int | None = None
    allowed_destinations: frozenset[str] | None = None

    def validate(self) -> None:
        if not self.name or not self.asset:
            raise PolicyError("every rule needs a name and an asset")
        if self.max_single_chain_units is not None and self.max_single_chain_units < 0:
            raise PolicyError(f"rule {self.name}: max_single_chain_units must be >= 0")
        if (self.window_seconds is None) != (self.window_cap_chain_units is None):
            raise PolicyError(f"rule {self.name}: window_seconds and window_cap_chain_units go together")
        if self.window_seconds is not None and self.window_seconds <= 0:
            raise PolicyError(f"rule {self.name}: window_seconds must be positive")
        if self.window_cap_chain_units is not None and self.window_cap_chain_units < 0:
            raise PolicyError(f"rule {self.name}: window_cap_chain_units must be >= 0")
        if self.max_single_chain_units is None and self.window_seconds is None and self.allowed_destinations is None:
            raise PolicyError(f"rule {self.name}: a rule must limit something")


@dataclass(frozen=True, slots=True)
class SignRequest:
    """What a caller asks the hot signer to sign (amount/destination as read from the transaction)."""

    request_id: str
    requested_by: str
    asset: str
    chain: str
    destination: str
    amount_chain_units: int


@dataclass(frozen=True, slots=True)
class Decision:
    approved: bool
    rule: str | None  # the refusing rule, or the comma-joined rules that approved
    reason: str


class Policy:
    """An ordered list of rules; `evaluate` is pure."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        names = set()
        for rule in rules:
            rule.validate()
            if rule.name in names:
                raise PolicyError(f"rule name {rule.name!r} is used twice")
            names.add(rule.name)
        self.rules = tuple(rules)

    def rules_for(self, asset: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.asset == asset)

    def windows_for(self, asset: str) -> tuple[int, ...]:
        """The distinct window lengths (seconds) whose usage `evaluate` needs for `asset`."""
        return tuple(sorted({r.window_seconds for r in self.rules_for(asset) if r.window_seconds is not None}))

    def evaluate(self, request: SignRequest, window_used: Mapping[int, int]) -> Decision:
        """Decide on `request`; `window_used[s]` = amount already approved in the last s seconds."""
        if request.amount_chain_units <= 0:
            return Decision(False, None, "amount must be positive")
        rules = self.rules_for(request.asset)
        if not rules:
            return Decision(False, None, f"no hot-signing policy for asset {request.asset}")
        destination = normalize_destination(request.destination)
        for rule in rules:
            cap = rule.max_single_chain_units
            if cap is not None and request.amount_chain_units > cap:
                return Decision(False, rule.name, f"amount {request.amount_chain_units} exceeds the single-transaction "
                                                  f"cap of {cap}")
            if rule.window_seconds is not None and rule.window_cap_chain_units is not None:
                used = window_used[rule.window_seconds]
                if used + request.amount_chain_units > rule.window_cap_chain_units:
                    return Decision(False, rule.name, f"{used} already signed in the last {rule.window_seconds} s; "
                                                      f"{request.amount_chain_units} more exceeds the window cap of "
                                                      f"{rule.window_cap_chain_units}")
            if rule.allowed_destinations is not None and destination not in rule.allowed_destinations:
                return Decision(False, rule.name, f"destination {request.destination} is not on the allow-list")
        return Decision(True, ",".join(r.name for r in rules), "within policy")

    @classmethod
    def from_config(cls, doc: Mapping[str, Any]) -> Policy:
        """Build from the JSON configuration shape documented in this module."""
        raw = doc.get("rules")
        if not isinstance(raw, list):
            raise PolicyError("policy config needs a 'rules' list")
        rules = []
        for item in raw:
            if not isinstance(item, dict):
                raise PolicyError("each rule must be an object")
            known = {"name", "asset", "max_single_chain_units", "window_seconds", "window_cap_chain_units",
                     "allowed_destinations"}
            if set(item) - known:
                raise PolicyError(f"unknown rule field(s): {', '.join(sorted(set(item) - known))}")
            allow = item.get("allowed_destinations")
            if allow is not None and not (isinstance(allow, list) and all(isinstance(a, str) for a in allow)):
                raise PolicyError("allowed_destinations must be a list of addresses")
            rules.append(Rule(
                name=str(item.get("name", "")),
                asset=str(item.get("asset", "")),
                max_single_chain_units=_opt_int(item, "max_single_chain_units"),
                window_seconds=_opt_int(item, "window_seconds"),
                window_cap_chain_units=_opt_int(item, "window_cap_chain_units"),
                allowed_destinations=None if allow is None else frozenset(normalize_destination(a) for a in allow),
            ))
        return cls(rules)


def _opt_int(item: Mapping[str, Any], key: str) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or (isinstance(value, str) and not value.isdigit()):
        raise PolicyError(f"{key} must be a non-negative integer or decimal string, got {value!r}")
    return int(value)
