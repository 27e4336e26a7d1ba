"""The withdrawal processor: held withdrawals -> policy -> build -> sign -> persist -> broadcast -> settle.

One pass (`step`) does, each in its own PostgreSQL transactions:
1. take up every `held` withdrawal it has not seen (`wd_proc` stage `new`);
2. build its transaction (Bitcoin PSBT over the hot coins; Ethereum transfer with a nonce from the
   nonce manager) and, IN THE SAME TRANSACTION, ask the hot signer: approved -> the signed
   transaction is stored (stage `signed`); refused -> the draft is abandoned (coins and nonce given
   back) and the withdrawal waits in stage `review` for an operator (cold path, see `cold.py`);
3. broadcast every stored signed transaction — only ever what is stored, so after a crash the same
   bytes are sent again, never a rebuilt transaction; the watcher is asked to follow it;
4. check each broadcast withdrawal on chain: at the asset's required confirmations the ledger
   settles it (`ledger.withdrawals.settle_withdrawal`) in the transaction that marks the
   transaction confirmed; a transaction the chain no longer knows (dropped, or orphaned by a
   reorg) is re-broadcast as stored; a transaction refused for good before any node saw it is
   marked failed and the hold released (`release_withdrawal`) — one or the other, never both;
5. optionally fee-bump transactions unconfirmed for `bump_after_s` (`bump`: RBF for Bitcoin, the
   same nonce with fees +12.5% for Ethereum), also callable from the CLI;
6. optionally sweep (`sweep.py`) and confirm internal moves; fill Ethereum nonce gaps (`gaps.py`).
Steps 4 and 5 live in `confirm.py` and `bump.py`.
Chain API failures are logged and retried on the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.withdrawals import release_withdrawal
from ledger.withdrawals_proc import btc_build, eth_build
from ledger.withdrawals_proc import repo as r
from ledger.withdrawals_proc.errors import (
    BroadcastRejectedError,
    BuildError,
    InsufficientHotFundsError,
    ProcessorConfigError,
    UnknownWithdrawalError,
    WithdrawalError,
)
from ledger.withdrawals_proc.hotkeys import HotKeys
from watchers.errors import WatcherError

if TYPE_CHECKING:
    import asyncpg

    from ledger.withdrawals_proc.chains import BtcApi, EthApi
    from ledger.withdrawals_proc.sweep import SweepConfig, Sweeper

log = logging.getLogger("ledger.withdrawals")
REQUESTED_BY = "withdrawal-processor"


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    """Settings of the processor (environment variables in `from_env`)."""

    export_dir: Path | None = None
    fee_target_blocks: int = 3
    fee_floor_msat_per_vb: int = 1000
    bump_after_s: float | None = None
    poll_s: float = 1.0
    eth_min_tip_wei: int = eth_build.DEFAULT_MIN_TIP_WEI
    recheck_window_s: float = 3600.0  # settled transactions are watched this long for deep reorgs

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProcessorConfig:
        """COFFER_WITHDRAWALS_EXPORT_DIR (cold-path folder), COFFER_WITHDRAWALS_FEE_TARGET_BLOCKS (3),
        COFFER_WITHDRAWALS_FEE_FLOOR_SAT_VB (1, decimal), COFFER_WITHDRAWALS_BUMP_AFTER_S (unset: no
        automatic bumps), COFFER_WITHDRAWALS_POLL_S (1)."""
        env = os.environ if environ is None else environ
        try:
            export = env.get("COFFER_WITHDRAWALS_EXPORT_DIR", "")
            bump = env.get("COFFER_WITHDRAWALS_BUMP_AFTER_S", "")
            return cls(
                export_dir=Path(export) if export else None,
                fee_target_blocks=int(env.get("COFFER_WITHDRAWALS_FEE_TARGET_BLOCKS", "3")),
                fee_floor_msat_per_vb=int(Decimal(env.get("COFFER_WITHDRAWALS_FEE_FLOOR_SAT_VB", "1")) * 1000),
                bump_after_s=float(bump) if bump else None,
                poll_s=float(env.get("COFFER_WITHDRAWALS_POLL_S", "1")),
            )
        except (ValueError, ArithmeticError) as exc:
            raise ProcessorConfigError(f"bad COFFER_WITHDRAWALS_* setting: {exc}") from None


@dataclass(frozen=True, slots=True)
class ChainState:
    found: bool
    confirmations: int = 0
    succeeded: bool = True
    height: int | None = None
    fee_paid: int | None = None


def policy_asset_of(purpose: str, asset: str) -> str:
    """The asset name the hot policy is asked about: the asset for a withdrawal; `SWEEP:<asset>`,
    `GAS:ETH` or `COLD:<asset>` for internal moves, so the operator caps them separately (an asset
    without rules is refused: default deny)."""
    return asset if purpose == "withdrawal" else f"{purpose.upper()}:{asset}"


def chain_amount(amount_ledger: int, fee_ledger: int, asset: Any) -> int:
    """What goes on chain for a withdrawal, in chain units: (amount - fee) scaled up."""
    scale: int = 10 ** (int(asset["chain_decimals"]) - int(asset["ledger_decimals"]))
    return (amount_ledger - fee_ledger) * scale


async def store_signed(conn: asyncpg.Connection, tx: Any, signed: str) -> None:
    """Persist the signed form of draft `tx` (a signed PSBT is finalized to raw hex here)."""
    if tx["chain"] == "btc":
        raw, txid = btc_build.finalize_signed(signed)
        if txid != tx["txid"]:
            raise BuildError(f"the signed PSBT is transaction {txid}, not {tx['txid']}")
    else:
        from signer.eth_sign import keccak256

        raw = signed if signed.startswith("0x") else "0x" + signed
        txid = "0x" + keccak256(bytes.fromhex(raw[2:])).hex()
    await r.update_tx(conn, int(tx["id"]), signed=raw, txid=txid, state="signed")


class Processor:
    def __init__(self, pool: asyncpg.Pool, signer: Any, config: ProcessorConfig, *, btc: BtcApi | None,
                 eth: EthApi | None, sweep: SweepConfig | None = None) -> None:
        self.pool = pool
        self.signer = signer
        self.keys = HotKeys.from_signer(signer)
        self.config = config
        self.btc = btc
        self.eth = eth
        self._eth_chain_id: int | None = None
        self.errors = 0
        self.sweeper: Sweeper | None = None
        self.gap_retry_at = 0.0  # monotonic time before which no nonce-gap filler is tried again
        if sweep is not None:
            from ledger.withdrawals_proc.sweep import Sweeper

            self.sweeper = Sweeper(self, sweep)

    # ---- the loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a pass failed as a whole (database down): retry later
                self.errors += 1
                log.warning("withdrawals: pass failed: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.poll_s)

    async def step(self) -> int:
        """One pass (see module doc); returns how many things moved."""
        async with self.pool.acquire() as conn, conn.transaction():
            moved = await r.take_up_new(conn)
        for wid in await self._ids("new"):
            moved += await self._guard(self.build_new(wid), f"withdrawal {wid}")
        moved += await self._guard(self.fill_nonce_gaps(), "nonce gaps")
        moved += await self.broadcast_signed()
        for wid in await self._ids("broadcast"):
            moved += await self._guard(self.check(wid), f"withdrawal {wid}")
        if self.config.bump_after_s is not None:
            moved += await self.auto_bump(self.config.bump_after_s)
        moved += await self._guard(self.recheck_settled(self.config.recheck_window_s), "re-check of settled txs")
        if self.sweeper is not None:
            moved += await self.sweeper.step()
        moved += await self._guard(self.check_internal(), "internal transactions")
        return moved

    async def _guard(self, coro: Any, what: str) -> int:
        try:
            return int(await coro)
        except (WatcherError, WithdrawalError) as exc:
            self.errors += 1
            log.warning("%s: %s: %s (retried next pass)", what, type(exc).__name__, exc)
            return 0

    @property
    def chains(self) -> list[str]:
        """The chains this processor has an API for (the others' withdrawals are left alone)."""
        return [c for c, api in (("btc", self.btc), ("eth", self.eth)) if api is not None]

    async def _ids(self, stage: str) -> list[int]:
        rows = await self.pool.fetch("SELECT withdrawal_id FROM wd_proc WHERE stage = $1 AND chain = ANY($2::text[]) "
                                     "ORDER BY withdrawal_id", stage, self.chains)
        return [int(x["withdrawal_id"]) for x in rows]

    def _api(self, chain: str) -> Any:
        api = self.btc if chain == "btc" else self.eth
        if api is None:
            raise ProcessorConfigError(f"no {chain} chain API configured")
        return api

    # ---- build and sign ----------------------------------------------------------------

    async def _withdrawal(self, conn: asyncpg.Connection, wid: int) -> tuple[Any, Any]:
        row = await conn.fetchrow(
            "SELECT w.id, w.user_id, w.asset, w.amount, w.fee, w.address, w.state, p.stage FROM withdrawals w "
            "JOIN wd_proc p ON p.withdrawal_id = w.id WHERE w.id = $1 FOR UPDATE OF p", wid)
        if row is None:
            raise UnknownWithdrawalError(f"no withdrawal {wid} taken up by the processor")
        asset = await r.asset_row(conn, row["asset"])
        return row, asset

    async def build_draft(self, conn: asyncpg.Connection, w: Any, asset: Any) -> tuple[int, str]:
        """Build and store the unsigned transaction of withdrawal `w`; returns (tx id, unsigned)."""
        amount = chain_amount(int(w["amount"]), int(w["fee"]), asset)
        if asset["chain"] == "btc":
            return await self._build_btc(conn, asset=asset, destination=w["address"], amount_sat=amount,
                                         withdrawal_id=int(w["id"]), purpose="withdrawal")
        return await self._build_eth(conn, asset=asset, destination=w["address"], amount=amount,
                                     withdrawal_id=int(w["id"]), purpose="withdrawal")

    async def build_new(self, wid: int) -> int:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                w, asset = await self._withdrawal(conn, wid)
                if w["stage"] != "new" or w["state"] != "held":
                    return 0
                tx_id, _unsigned = await self.build_draft(conn, w, asset)
                tx = await r.get_tx(conn, tx_id)
                result = await self.sign(conn, tx, asset)
                if result is None:
                    return 1
                await self.abandon(conn, tx, f"hot policy refused: {result}")
                await r.set_stage(conn, wid, "review", reason=f"hot signer refused: {result}")
                log.info("withdrawal %d needs review (cold path): %s", wid, result)
                return 1
        except InsufficientHotFundsError as exc:
            async with self.pool.acquire() as conn, conn.transaction():
                await r.set_stage(conn, wid, "new", reason=str(exc))
            log.warning("withdrawal %d waits: %s", wid, exc)
            return 0

    async def sign(self, conn: asyncpg.Connection, tx: Any, asset: Any) -> str | None:
        """Ask the hot signer to sign stored draft `tx`; None when signed (stored), else the refusal."""
        request_id = f"wd-{tx['withdrawal_id']}-tx-{tx['id']}"
        amount = int(tx["amount_chain"])
        policy_asset = policy_asset_of(tx["purpose"], tx["asset"])
        if tx["chain"] == "btc":
            result = await self.signer.sign_btc(conn, request_id=request_id, requested_by=REQUESTED_BY,
                                                asset=policy_asset, destination=tx["destination"], amount_sat=amount,
                                                psbt=tx["unsigned"])
        else:
            result = await self.signer.sign_eth(conn, request_id=request_id, requested_by=REQUESTED_BY,
                                                asset=policy_asset, destination=tx["destination"],
                                                amount_chain_units=amount, tx_json=tx["unsigned"],
                                                token_contract=asset["token_contract"])
        if not result.approved:
            return f"{result.rule}: {result.reason}" if result.rule else str(result.reason)
        await self.store_signed(conn, tx, str(result.signed))
        if tx["withdrawal_id"] is not None:
            await conn.execute("UPDATE wd_proc SET stage = 'signed', path = coalesce(path, 'hot'), updated_at = now() "
                               "WHERE withdrawal_id = $1 AND stage IN ('new', 'review', 'cold')", tx["withdrawal_id"])
        return None

    async def store_signed(self, conn: asyncpg.Connection, tx: Any, signed: str) -> None:
        await store_signed(conn, tx, signed)

    async def abandon(self, conn: asyncpg.Connection, tx: Any, reason: str) -> None:
        """A draft that no node ever saw: give its coins / nonce back."""
        await r.update_tx(conn, int(tx["id"]), state="abandoned", reason=reason)
        if tx["chain"] == "btc":
            await r.free_inputs(conn, int(tx["id"]))
        elif tx["nonce"] is not None and int(tx["generation"]) == 0:
            await r.give_back_nonce(conn, tx["network"], tx["from_address"], int(tx["nonce"]))

    async def _btc_coins(self, conn: asyncpg.Connection, network: str) -> list[btc_build.Coin]:
        assert self.btc is not None
        rows = await conn.fetch(
            "SELECT address, derivation_path FROM deposit_addresses WHERE chain = 'btc' AND network = $1 "
            "UNION SELECT address, derivation_path FROM wd_btc_change WHERE network = $1", network)
        reserved = await r.reserved_outpoints(conn, network)
        coins: list[btc_build.Coin] = []
        for row in rows:
            pubkey = self.keys.btc_pubkey(row["derivation_path"])
            if pubkey is None:
                continue
            for u in await self.btc.address_utxos(row["address"]):
                outpoint = f"{u['txid']}:{u['vout']}"
                if not (u.get("status") or {}).get("confirmed") or outpoint in reserved:
                    continue
                coins.append(btc_build.Coin(str(u["txid"]), int(u["vout"]), int(u["value"]),
                                            row["derivation_path"], pubkey, ""))
        return coins

    async def _build_btc(self, conn: asyncpg.Connection, *, asset: Any, destination: str, amount_sat: int,
                         withdrawal_id: int | None, purpose: str) -> tuple[int, str]:
        btc = self._api("btc")
        network = str(asset["network"])
        if network != self.keys.btc_network:
            raise ProcessorConfigError(f"asset {asset['code']} is on {network}, the hot signer on "
                                       f"{self.keys.btc_network}")
        coins = await self._btc_coins(conn, network)
        rate = await btc.fee_rate_msat_per_vb(target_blocks=self.config.fee_target_blocks,
                                              floor_msat_per_vb=self.config.fee_floor_msat_per_vb)
        dest_len = len(btc_build.script_for(destination))
        chosen, fee, change_sat = btc_build.select_coins(coins, amount_sat, dest_len, 22, rate)
        chosen = [dataclasses.replace(c, prev_tx_hex=await btc.tx_hex(c.txid)) for c in chosen]
        change = None
        if change_sat:
            index = await r.next_change_index(conn, network)
            address, path, pubkey = self.keys.btc_change(index)
            await r.record_change(conn, network, index, address, path)
            change = btc_build.ChangeTarget(address, path, pubkey)
        built = btc_build.build_psbt(chosen, destination=destination, amount_sat=amount_sat, fee_sat=fee,
                                     change_sat=change_sat, change=change, fingerprint=self.keys.fingerprint)
        tx_id = await r.insert_tx(
            conn, withdrawal_id=withdrawal_id, purpose=purpose, chain="btc", network=network, asset=asset["code"],
            destination=destination, amount_chain=Decimal(amount_sat), fee_chain=Decimal(built.fee_sat),
            fee_rate=Decimal(rate), unsigned=built.psbt_b64, txid=built.txid, state="unsigned")
        await r.reserve_inputs(conn, network, built.inputs, tx_id)
        return tx_id, built.psbt_b64

    async def eth_chain_id(self) -> int:
        if self._eth_chain_id is None:
            self._eth_chain_id = await self._api("eth").chain_id()
        return self._eth_chain_id

    async def eth_fees(self) -> eth_build.Fees:
        return eth_build.fees_from_history(await self._api("eth").fee_history(),
                                           min_tip_wei=self.config.eth_min_tip_wei)

    async def _build_eth(self, conn: asyncpg.Connection, *, asset: Any, destination: str, amount: int,
                         withdrawal_id: int | None, purpose: str) -> tuple[int, str]:
        eth = self._api("eth")
        chain_id = await self.eth_chain_id()
        fees = await self.eth_fees()
        sender = self.keys.eth_hot_address
        token = asset["token_contract"]
        gas = eth_build.ERC20_TRANSFER_GAS if token else eth_build.ETH_TRANSFER_GAS
        balance = await eth.balance_wei(sender)
        need = gas * fees.max_fee_per_gas_wei + (0 if token else amount)
        if balance < need:
            raise InsufficientHotFundsError(f"hot address {sender} has {balance} wei, needs {need} wei")
        if token:
            have = await eth.token_balance(token, sender)
            if have < amount:
                raise InsufficientHotFundsError(f"hot address {sender} holds {have} {asset['code']} units, "
                                                f"needs {amount}")
        nonce = await r.allocate_nonce(conn, asset["network"], sender, await eth.nonce(sender, "pending"))
        tx = eth_build.transfer_tx(chain_id=chain_id, nonce=nonce, destination=destination, amount=amount, fees=fees,
                                   derivation_path=self.keys.eth_hot_path, token_contract=token)
        unsigned = eth_build.dumps(tx)
        tx_id = await r.insert_tx(
            conn, withdrawal_id=withdrawal_id, purpose=purpose, chain="eth", network=asset["network"],
            asset=asset["code"], destination=destination, amount_chain=Decimal(amount),
            fee_chain=Decimal(eth_build.max_fee_wei(tx)), fee_rate=Decimal(fees.max_fee_per_gas_wei),
            tip_wei=Decimal(fees.max_priority_fee_per_gas_wei), from_address=sender.lower(), nonce=nonce,
            unsigned=unsigned, state="unsigned")
        return tx_id, unsigned

    # ---- broadcast ---------------------------------------------------------------------

    async def broadcast_signed(self) -> int:
        rows = await self.pool.fetch("SELECT id FROM wd_txs WHERE state = 'signed' AND chain = ANY($1::text[]) "
                                     "ORDER BY chain, nonce, id", self.chains)
        moved = 0
        for row in rows:
            moved += await self._guard(self.broadcast(int(row["id"])), f"transaction {row['id']}")
        return moved

    async def chain_state(self, tx: Any) -> ChainState:
        if tx["chain"] == "btc":
            btc = self._api("btc")
            status = await btc.tx_status(tx["txid"])
            if status is None:
                return ChainState(False)
            if not status.get("confirmed"):
                return ChainState(True)
            height = int(status["block_height"])
            return ChainState(True, await btc.tip_height() - height + 1, True, height, int(tx["fee_chain"]))
        eth = self._api("eth")
        receipt = await eth.get_receipt(tx["txid"])
        if receipt is None or receipt.get("blockNumber") is None:
            return ChainState(await eth.get_transaction(tx["txid"]) is not None)
        height = int(receipt["blockNumber"], 16)
        fee = int(receipt.get("gasUsed", "0x0"), 16) * int(receipt.get("effectiveGasPrice", "0x0"), 16)
        return ChainState(True, await eth.block_number() - height + 1, int(receipt.get("status", "0x1"), 16) == 1,
                          height, fee)

    async def broadcast(self, tx_id: int) -> int:
        """Send stored transaction `tx_id` as stored; record it; follow it."""
        from watchers.repository import follow_tx

        tx = await r.get_tx(self.pool, tx_id)  # type: ignore[arg-type]
        if tx is None or tx["state"] != "signed":
            return 0
        try:
            await self._api(tx["chain"]).send(tx["signed"], tx["txid"])
        except BroadcastRejectedError as exc:
            if (await self.chain_state(tx)).found:
                log.info("transaction %s was already sent (before a restart)", tx["txid"])
            else:
                await self._refused(tx, str(exc))
                return 1
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                "UPDATE wd_txs SET state = 'broadcast', broadcasts = broadcasts + 1, "
                "first_broadcast_at = coalesce(first_broadcast_at, now()), last_broadcast_at = now(), "
                "updated_at = now() WHERE id = $1 AND state = 'signed' RETURNING id", tx_id)
            if done is None:
                return 0
            asset = await r.asset_row(conn, tx["asset"])
            await follow_tx(conn, chain=tx["chain"], network=tx["network"], txid=tx["txid"], purpose=tx["purpose"],
                            required_confirmations=int(asset["required_confirmations"]))
            if tx["withdrawal_id"] is not None:
                await conn.execute("UPDATE wd_proc SET stage = 'broadcast', updated_at = now() "
                                   "WHERE withdrawal_id = $1 AND stage = 'signed'", tx["withdrawal_id"])
        log.info("broadcast %s transaction %s (withdrawal %s)", tx["chain"], tx["txid"], tx["withdrawal_id"])
        return 1

    async def _refused(self, tx: Any, reason: str) -> None:
        """A node refused `tx` and no node has it: it can never confirm. A fee bump falls back to the
        transaction it replaced; a first transaction fails and its withdrawal's hold is released."""
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await r.get_tx(conn, int(tx["id"]), lock=True)
            if locked is None or locked["state"] != "signed":
                return
            await r.update_tx(conn, int(tx["id"]), state="failed", reason=reason[:500])
            if tx["replaces"] is not None:
                await r.update_tx(conn, int(tx["replaces"]), state="broadcast")
                if tx["chain"] == "btc":
                    await r.move_inputs(conn, int(tx["id"]), int(tx["replaces"]))
                log.warning("fee bump %s refused (%s); the previous transaction stays", tx["txid"], reason)
                return
            if tx["chain"] == "btc":
                await r.free_inputs(conn, int(tx["id"]))
            elif "nonce too low" not in reason:
                await r.give_back_nonce(conn, tx["network"], tx["from_address"], int(tx["nonce"]))
            if tx["withdrawal_id"] is not None:
                wid = int(tx["withdrawal_id"])
                why = f"transaction refused by the node: {reason}"[:500]
                await release_withdrawal(conn, withdrawal_id=wid, reason=why)
                await r.set_stage(conn, wid, "failed", reason=reason[:500])
        log.error("transaction %s refused for good: %s; withdrawal %s released", tx["txid"], reason,
                  tx["withdrawal_id"])

    # ---- confirmation and fee bumps (confirm.py, bump.py) --------------------------------

    async def check(self, wid: int) -> int:
        from ledger.withdrawals_proc import confirm

        return await confirm.check(self, wid)

    async def check_internal(self) -> int:
        from ledger.withdrawals_proc import confirm

        return await confirm.check_internal(self)

    async def recheck_settled(self, window_s: float) -> int:
        from ledger.withdrawals_proc import confirm

        return await confirm.recheck_settled(self, window_s)

    async def fill_nonce_gaps(self) -> int:
        from ledger.withdrawals_proc.gaps import fill_nonce_gaps

        return await fill_nonce_gaps(self)

    async def auto_bump(self, older_than_s: float) -> int:
        from ledger.withdrawals_proc import bump

        return await bump.auto_bump(self, older_than_s)

    async def bump(self, tx_id: int) -> int:
        """Replace broadcast transaction `tx_id` by one paying a higher fee; returns the new tx id."""
        from ledger.withdrawals_proc import bump

        return await bump.bump(self, tx_id)
