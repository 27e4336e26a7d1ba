"""What `coffer up` runs: the private servers' locations and the list of child services.

A service is listed only when its command exists in this build (a package that has not
landed yet contributes nothing), so `coffer up` always starts what the tree can run.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from coffer.settings import Settings
from coffer.supervisor import ServiceSpec

DEMO_MARKETS = ("BTC-USDT", "ETH-USDT", "ETH-BTC")


@dataclass(frozen=True, slots=True)
class StackPaths:
    root: Path

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def has_command(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> bool:
    """True if `coffer <path...>` is a known sub-command of `parser`."""
    current = parser
    for word in path:
        actions = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            return False
        current = actions[0].choices[word]
    return True


def plan_services(settings: Settings, parser: argparse.ArgumentParser) -> list[ServiceSpec]:
    """The child services to start, in start order (stopped in reverse)."""
    candidates: list[ServiceSpec] = []
    if has_command(parser, ("ledger", "run")):
        # two processes, so intake and settlement use both cores (each is one Python event loop)
        candidates.append(ServiceSpec("ledger-intake", ("ledger", "run", "--roles", "intake"),
                                      ready_line="ledger: consumers running"))
        candidates.append(ServiceSpec("ledger-settlement", ("ledger", "run", "--roles", "settlement,withdrawals"),
                                      ready_line="ledger: consumers running"))
    if has_command(parser, ("matcher", "run")):
        argv: list[str] = ["matcher", "run"]
        for market in DEMO_MARKETS:
            argv += ["--market", market]
        candidates.append(ServiceSpec("matcher", tuple(argv)))
    if has_command(parser, ("matcher", "marketdata")):
        argv = ["matcher", "marketdata"]
        for market in DEMO_MARKETS:
            argv += ["--market", market]
        candidates.append(ServiceSpec("marketdata", tuple(argv)))
    if has_command(parser, ("api", "trading")):
        candidates.append(
            ServiceSpec(
                "api-trading", ("api", "trading"),
                url=f"http://{settings.host}:{settings.trading_api_port}/docs", ready_port=settings.trading_api_port,
            )
        )
    if has_command(parser, ("api", "deposits")):
        candidates.append(
            ServiceSpec(
                "api-deposits", ("api", "deposits"),
                url=f"http://{settings.host}:{settings.deposit_api_port}/docs", ready_port=settings.deposit_api_port,
            )
        )
    return [spec for spec in candidates if _module_ready(spec)]


def _module_ready(spec: ServiceSpec) -> bool:
    """The API apps are imported lazily by api/cli.py: list them only once they exist."""
    import importlib.util

    modules = {"api-trading": "api.trading_app", "api-deposits": "api.deposits_app"}
    name = modules.get(spec.name)
    return name is None or importlib.util.find_spec(name) is not None
