"""Running the withdrawal processor from the environment: alone (`coffer withdrawals run`) or inside
`coffer ledger run` (`run_from_env(pool, stop)`).

Environment: the hot signer's variables (signer.hot_config: COFFER_SIGNER_HOT_KEYSTORE, ...),
the chain APIs COFFER_WITHDRAWALS_ESPLORA_URL and COFFER_WITHDRAWALS_ETH_RPC_URL (falling back to
the watchers' COFFER_WATCHER_ESPLORA_URL / COFFER_WATCHER_ETH_RPC_URL; a chain without a URL is
not processed), the processor's own settings (`ProcessorConfig.from_env`) and the sweeping ones
(`SweepConfig.from_env`: Ethereum deposit sweeps; hot above its cap to cold — BTC through the
cold path, ETH / ERC-20 hot-signed to the allow-listed cold address of
COFFER_WITHDRAWALS_COLD_ETH_XPUB when COFFER_WITHDRAWALS_HOT_CAP_ETH_WEI /
COFFER_WITHDRAWALS_HOT_CAP_<TOKEN> are set). Without
COFFER_SIGNER_HOT_KEYSTORE the processor does not start inside `coffer ledger run` (a log line
says so): withdrawals then stay held.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from ledger.withdrawals_proc.processor import Processor, ProcessorConfig

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("ledger.withdrawals")
READY_LINE = "withdrawals: processor running"


def chain_urls(env: Mapping[str, str]) -> tuple[str, str]:
    btc = env.get("COFFER_WITHDRAWALS_ESPLORA_URL") or env.get("COFFER_WATCHER_ESPLORA_URL", "")
    eth = env.get("COFFER_WITHDRAWALS_ETH_RPC_URL") or env.get("COFFER_WATCHER_ETH_RPC_URL", "")
    return btc, eth


async def open_processor(pool: asyncpg.Pool, stack: AsyncExitStack, environ: Mapping[str, str] | None = None,
                         signer: Any = None) -> Processor:
    """A processor with its chain clients registered on `stack` (closed with it)."""
    from ledger.withdrawals_proc.chains import BtcApi, EthApi
    from ledger.withdrawals_proc.sweep import SweepConfig
    from signer.hot_config import hot_signer_from_env

    env = os.environ if environ is None else environ
    signer = signer if signer is not None else hot_signer_from_env(env)
    btc_url, eth_url = chain_urls(env)
    btc = BtcApi(btc_url) if btc_url else None
    if btc is not None:
        stack.push_async_callback(btc.aclose)
    eth = EthApi(eth_url) if eth_url else None
    if eth is not None:
        stack.push_async_callback(eth.aclose)
    return Processor(pool, signer, ProcessorConfig.from_env(env), btc=btc, eth=eth, sweep=SweepConfig.from_env(env))


async def run_from_env(pool: asyncpg.Pool, stop: asyncio.Event, environ: Mapping[str, str] | None = None) -> None:
    """The processor loop until `stop`; returns at once when no hot keystore is configured."""
    env = os.environ if environ is None else environ
    if not env.get("COFFER_SIGNER_HOT_KEYSTORE"):
        log.warning("withdrawal processor not started: COFFER_SIGNER_HOT_KEYSTORE is not set")
        return
    async with AsyncExitStack() as stack:
        proc = await open_processor(pool, stack, env)
        print(READY_LINE, flush=True)
        await proc.run(stop)
