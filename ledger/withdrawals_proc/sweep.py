"""Sweeping: Ethereum deposit addresses into the hot address, and the hot wallet above its cap to cold.

Ethereum deposits land on per-user addresses (`m/44'/60'/0'/0/i` of the hot seed). A pass of
`Sweeper.step` moves, for each deposit address not already being swept:
- ERC-20 balances first: when the address lacks the gas for a `transfer`, the hot address sends
  it that gas (+10%) first (`gas` transaction); once it has it, `transfer(hot, balance)`
  (`sweep` transaction) — its ETH is left for that gas;
- then ETH: everything but the gas of the sweep itself (`gas * max_fee_per_gas`; what the fee
  does not use stays behind as dust), when that is at least `eth_min_sweep_wei`.
Each is signed by the hot signer under the policy assets `SWEEP:<asset>` / `GAS:ETH` (the
operator's policy caps them separately; none configured = refused = nothing swept).
Bitcoin deposit outputs are already hot coins: nothing to sweep. Hot above its cap: when the hot
BTC coins exceed `hot_cap_sat`, a PSBT moving the excess down to half the cap to a fresh cold
address (derived from the cold account xpub printed by `coffer-signer xpub`) is built, its coins
reserved, and exported for offline signing (the cold path: `coffer withdrawals import`, then the
processor broadcasts it). Hot ETH / ERC-20 tokens above their caps go to the cold Ethereum address
signed by the hot signer under the allow-listed policy assets `COLD:<asset>` (`cold_sweep_eth.py`).
Internal transactions are confirmed by `Processor.check_internal`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ledger.withdrawals_proc import eth_build
from ledger.withdrawals_proc import repo as r
from ledger.withdrawals_proc.errors import ProcessorConfigError, WithdrawalError

if TYPE_CHECKING:
    import asyncpg

    from ledger.withdrawals_proc.cold_sweep_eth import EthColdSweeper
    from ledger.withdrawals_proc.processor import Processor

log = logging.getLogger("ledger.withdrawals.sweep")
LIVE = ("unsigned", "signed", "broadcast", "replaced")


@dataclass(frozen=True, slots=True)
class SweepConfig:
    sweep_eth: bool = False
    eth_min_sweep_wei: int = 10**15
    hot_cap_btc_sat: int | None = None
    cold_btc_xpub: str | None = None
    hot_cap_eth_wei: int | None = None
    hot_cap_tokens: tuple[tuple[str, int], ...] = ()  # (ERC-20 asset code, cap in token base units)
    cold_eth_xpub: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SweepConfig:
        """COFFER_WITHDRAWALS_SWEEP_ETH (1 = on), COFFER_WITHDRAWALS_ETH_MIN_SWEEP_WEI (10**15),
        COFFER_WITHDRAWALS_HOT_CAP_BTC_SAT and COFFER_WITHDRAWALS_COLD_BTC_XPUB (both, or neither);
        COFFER_WITHDRAWALS_COLD_ETH_XPUB with COFFER_WITHDRAWALS_HOT_CAP_ETH_WEI and/or
        COFFER_WITHDRAWALS_HOT_CAP_<TOKEN> (an ERC-20 asset code, e.g. USDT; in its base units:
        1000000000 = 1000 USDT) — the xpub and at least one cap, or none of them."""
        env = os.environ if environ is None else environ
        cap = env.get("COFFER_WITHDRAWALS_HOT_CAP_BTC_SAT", "")
        xpub = env.get("COFFER_WITHDRAWALS_COLD_BTC_XPUB", "") or None
        if bool(cap) != bool(xpub):
            raise ProcessorConfigError("set COFFER_WITHDRAWALS_HOT_CAP_BTC_SAT and COFFER_WITHDRAWALS_COLD_BTC_XPUB "
                                       "together")
        prefix = "COFFER_WITHDRAWALS_HOT_CAP_"
        eth_cap = env.get(prefix + "ETH_WEI", "")
        if env.get(prefix + "ETH", ""):
            raise ProcessorConfigError(f"{prefix}ETH is not a setting: the ETH cap is {prefix}ETH_WEI (in wei)")
        token_names = sorted(k for k, v in env.items() if k.startswith(prefix) and v
                             and k not in (prefix + "BTC_SAT", prefix + "ETH_WEI"))
        eth_xpub = env.get("COFFER_WITHDRAWALS_COLD_ETH_XPUB", "") or None
        if bool(eth_cap or token_names) != bool(eth_xpub):
            raise ProcessorConfigError("set COFFER_WITHDRAWALS_COLD_ETH_XPUB together with "
                                       f"{prefix}ETH_WEI and/or {prefix}<TOKEN>")
        try:
            caps = {"eth": int(eth_cap) if eth_cap else None}
            tokens = tuple((k[len(prefix):], int(env[k])) for k in token_names)
            if any(v is not None and v < 0 for v in caps.values()) or any(v < 0 for _, v in tokens):
                raise ValueError("a hot cap is negative")
            return cls(sweep_eth=env.get("COFFER_WITHDRAWALS_SWEEP_ETH", "") == "1",
                       eth_min_sweep_wei=int(env.get("COFFER_WITHDRAWALS_ETH_MIN_SWEEP_WEI", str(10**15))),
                       hot_cap_btc_sat=int(cap) if cap else None, cold_btc_xpub=xpub,
                       hot_cap_eth_wei=caps["eth"], hot_cap_tokens=tokens, cold_eth_xpub=eth_xpub)
        except ValueError as exc:
            raise ProcessorConfigError(f"bad sweep setting: {exc}") from None


class Sweeper:
    def __init__(self, proc: Processor, config: SweepConfig) -> None:
        self.proc = proc
        self.config = config
        self._cold: Any = None
        if config.cold_btc_xpub:
            from wallet.derive import open_account

            self._cold = open_account(config.cold_btc_xpub, "btc", proc.keys.btc_network, "p2wpkh")
        self.cold_eth: EthColdSweeper | None = None
        if config.cold_eth_xpub:
            from ledger.withdrawals_proc.cold_sweep_eth import EthColdSweeper

            self.cold_eth = EthColdSweeper(proc, xpub=config.cold_eth_xpub, cap_eth_wei=config.hot_cap_eth_wei,
                                           token_caps=config.hot_cap_tokens)

    async def step(self) -> int:
        moved = 0
        if self.config.sweep_eth and self.proc.eth is not None:
            moved += await self.proc._guard(self.sweep_eth(), "ethereum sweep")
        if self._cold is not None and self.proc.btc is not None:
            moved += await self.proc._guard(self.hot_to_cold_btc(), "hot to cold")
        if self.cold_eth is not None and self.proc.eth is not None:
            moved += await self.proc._guard(self.cold_eth.step(), "hot to cold (ethereum)")
        return moved

    async def _busy(self, conn: asyncpg.Connection) -> set[str]:
        rows = await conn.fetch(
            "SELECT lower(coalesce(from_address, '')) AS a, lower(destination) AS d, purpose FROM wd_txs "
            "WHERE purpose IN ('sweep', 'gas') AND state = ANY($1::text[])", list(LIVE))
        return {row["a"] if row["purpose"] == "sweep" else row["d"] for row in rows}

    async def _eth_tx(self, conn: asyncpg.Connection, *, asset: Any, sender: str, path: str, destination: str,
                      amount: int, token: str | None, purpose: str, fees: eth_build.Fees) -> bool:
        proc = self.proc
        eth = proc._api("eth")
        nonce = await r.allocate_nonce(conn, asset["network"], sender, await eth.nonce(sender, "pending"))
        tx = eth_build.transfer_tx(chain_id=await proc.eth_chain_id(), nonce=nonce, destination=destination,
                                   amount=amount, fees=fees, derivation_path=path, token_contract=token)
        tx_id = await r.insert_tx(
            conn, withdrawal_id=None, purpose=purpose, chain="eth", network=asset["network"], asset=asset["code"],
            destination=destination, amount_chain=Decimal(amount), fee_chain=Decimal(eth_build.max_fee_wei(tx)),
            fee_rate=Decimal(fees.max_fee_per_gas_wei), tip_wei=Decimal(fees.max_priority_fee_per_gas_wei),
            from_address=sender.lower(), nonce=nonce, unsigned=eth_build.dumps(tx), state="unsigned")
        row = await r.get_tx(conn, tx_id)
        refused = await proc.sign(conn, row, asset)
        if refused is not None:
            await proc.abandon(conn, row, f"hot policy refused: {refused}")
            log.warning("%s of %s from %s refused by the hot policy: %s", purpose, asset["code"], sender, refused)
            return False
        log.info("%s: %s %s from %s to %s (nonce %d)", purpose, amount, asset["code"], sender, destination, nonce)
        return True

    async def sweep_eth(self) -> int:
        proc = self.proc
        eth = proc._api("eth")
        hot = proc.keys.eth_hot_address
        moved = 0
        async with proc.pool.acquire() as conn:
            eth_asset = await conn.fetchrow("SELECT * FROM assets WHERE code = 'ETH'")
            if eth_asset is None:
                return 0
            tokens = await conn.fetch("SELECT * FROM assets WHERE chain = 'eth' AND network = $1 "
                                      "AND token_contract IS NOT NULL ORDER BY code", eth_asset["network"])
            addresses = await conn.fetch(
                "SELECT DISTINCT address, derivation_path FROM deposit_addresses WHERE chain = 'eth' AND network = $1",
                eth_asset["network"])
            busy = await self._busy(conn)
        fees = await proc.eth_fees()
        for row in addresses:
            address, path = str(row["address"]), str(row["derivation_path"])
            if not proc.keys.eth_deposit_path_ok(path) or address.lower() in busy:
                continue
            eth_balance = await eth.balance_wei(address)
            swept_token = False
            for token in tokens:
                units = await eth.token_balance(token["token_contract"], address)
                if units <= 0:
                    continue
                swept_token = True
                gas_wei = eth_build.ERC20_TRANSFER_GAS * fees.max_fee_per_gas_wei
                async with proc.pool.acquire() as conn, conn.transaction():
                    if eth_balance < gas_wei:
                        top_up = (gas_wei - eth_balance) * 11 // 10
                        done = await self._eth_tx(conn, asset=eth_asset, sender=hot, path=proc.keys.eth_hot_path,
                                                  destination=address, amount=top_up, token=None, purpose="gas",
                                                  fees=fees)
                    else:
                        done = await self._eth_tx(conn, asset=token, sender=address, path=path, destination=hot,
                                                  amount=units, token=token["token_contract"], purpose="sweep",
                                                  fees=fees)
                moved += int(done)
                break
            if swept_token:
                continue
            value = eth_balance - eth_build.ETH_TRANSFER_GAS * fees.max_fee_per_gas_wei
            if value >= self.config.eth_min_sweep_wei:
                async with proc.pool.acquire() as conn, conn.transaction():
                    moved += int(await self._eth_tx(conn, asset=eth_asset, sender=address, path=path,
                                                    destination=hot, amount=value, token=None, purpose="sweep",
                                                    fees=fees))
        return moved

    async def hot_to_cold_btc(self) -> int:
        from ledger.withdrawals_proc import btc_build
        from ledger.withdrawals_proc.cold import write_export

        proc = self.proc
        cap = self.config.hot_cap_btc_sat
        assert cap is not None and self._cold is not None
        async with proc.pool.acquire() as conn, conn.transaction():
            asset = await conn.fetchrow("SELECT * FROM assets WHERE chain = 'btc' AND network = $1 "
                                        "AND token_contract IS NULL ORDER BY code LIMIT 1", proc.keys.btc_network)
            if asset is None:
                return 0
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('wd_hot_to_cold_btc'))")
            if await conn.fetchval("SELECT count(*) FROM wd_txs WHERE purpose = 'cold' AND chain = 'btc' "
                                   "AND state = ANY($1::text[])", list(LIVE)):
                return 0  # one move at a time: the officer signs it first
            total = sum(c.value_sat for c in await proc._btc_coins(conn, asset["network"]))
            if total <= cap:
                return 0
            index = int(await conn.fetchval("SELECT count(*) FROM wd_txs WHERE purpose = 'cold' AND chain = 'btc'"))
            destination = self._cold.address(index, 0)
            amount = total - cap // 2
            rate = await proc._api("btc").fee_rate_msat_per_vb(target_blocks=proc.config.fee_target_blocks,
                                                               floor_msat_per_vb=proc.config.fee_floor_msat_per_vb)
            amount -= btc_build.fee_for(rate, btc_build.estimate_vsize(32, (22, 22)))  # room for the fee
            if amount <= btc_build.DUST_LIMIT_SAT:
                return 0
            try:
                tx_id, _ = await proc._build_btc(conn, asset=asset, destination=destination, amount_sat=amount,
                                                 withdrawal_id=None, purpose="cold")
            except WithdrawalError as exc:
                log.warning("hot to cold: cannot build: %s", exc)
                return 0
            tx = await r.get_tx(conn, tx_id)
        path = write_export(proc.config.export_dir, tx) if proc.config.export_dir is not None else None
        log.warning("hot wallet holds %d sat, above its cap of %d: %d sat to cold address %s waits for offline "
                    "signing%s", total, cap, amount, destination, f" ({path})" if path else "")
        return 1
