"""Fee bumps of stuck transactions: Bitcoin RBF (same coins, same payment, a higher fee taken from the
change; BIP125 rules 3 and 4) and Ethereum replacement (same nonce, fees +12.5%, at least the current
market). The replacement is signed by the hot signer and persisted in the transaction that marks the
original `replaced` (it may still confirm instead: both are watched), then broadcast.

Withdrawal transactions and internal ones alike: an Ethereum gas top-up or nonce-gap filler
(`GAS:ETH`), deposit sweep (`SWEEP:<asset>`, sent from the deposit address) or hot-to-cold move
(`COLD:<asset>`) is replaced at its nonce under the same policy asset as the original, so one
stuck internal transaction does not hold up every later hot nonce. An Ethereum sweep of a deposit
address's whole ETH balance pays the higher fee out of the amount swept (the address has nothing
else); any other replacement needs the sender to afford its new maximum cost. Whichever version
confirms, `confirm.check` (withdrawals: settled once) or `confirm.check_internal` (internal moves:
the ledger is never touched; the other versions at that nonce are marked failed) records it.

Only transactions the hot signer signed can be bumped here: one signed offline (the cold path:
every hot-to-cold Bitcoin PSBT, withdrawals above the hot policy) cannot be re-signed by the hot key.
`bump` refuses those with `OfflineSignedError`, saying so; `auto_bump` leaves them to the operator
(logged once per transaction). A bump that fails (refused, sender short of gas) is retried by
`auto_bump` after `RETRY_S`, not on every pass.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ledger.withdrawals_proc import btc_build, eth_build
from ledger.withdrawals_proc import repo as r
from ledger.withdrawals_proc.errors import UnknownWithdrawalError, WithdrawalError, WrongStageError

if TYPE_CHECKING:
    import asyncpg

    from ledger.withdrawals_proc.processor import Processor

log = logging.getLogger("ledger.withdrawals")
RETRY_S = 60.0


class OfflineSignedError(WrongStageError):
    """The transaction was signed offline: the hot signer cannot sign its replacement."""


class SenderShortError(WithdrawalError):
    """The sender cannot pay the replacement's higher maximum fee."""


@dataclass
class _BumpState:
    retry_at: dict[int, float] = field(default_factory=dict)  # tx id -> monotonic time of the next try
    told: set[int] = field(default_factory=set)  # offline-signed transactions already logged


_STATE: weakref.WeakKeyDictionary[Any, _BumpState] = weakref.WeakKeyDictionary()


def _state(proc: Processor) -> _BumpState:
    state = _STATE.get(proc)
    if state is None:
        state = _STATE[proc] = _BumpState()
    return state


def describe(tx: Any) -> str:
    """`transaction 12 (eth gas ETH, nonce 4, 0xab..)` for log and CLI lines."""
    what = "withdrawal " + str(tx["withdrawal_id"]) if tx["withdrawal_id"] is not None else tx["purpose"]
    nonce = f", nonce {tx['nonce']}" if tx["nonce"] is not None else ""
    return f"transaction {tx['id']} ({tx['chain']} {what} {tx['asset']}{nonce}, {tx['txid']})"


def offline_message(tx: Any) -> str:
    how = ("a Bitcoin replacement (RBF) spends the same coins with a higher fee and must be signed offline "
           "again" if tx["chain"] == "btc" else "a replacement at the same nonce with fees >= 10% higher must be "
           "signed offline again")
    return (f"{describe(tx)} was signed offline (cold path): the hot key cannot re-sign a fee bump, so it is "
            f"not bumped; left to the operator ({how}; until then it stays broadcast and watched, and confirms "
            "as it is)")


async def hot_signed(conn: asyncpg.Connection | asyncpg.Pool, tx: Any) -> bool:
    """Whether the hot signer approved and signed `tx` (the processor's request id for it)."""
    request_id = f"wd-{tx['withdrawal_id']}-tx-{tx['id']}"
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM signer_decisions WHERE request_id = $1 AND approved)", request_id))


async def stuck(proc: Processor, older_than_s: float) -> list[Any]:
    """Broadcast transactions (withdrawals and internal moves) first sent more than `older_than_s`
    ago and not replaced by a live bump yet."""
    return list(await proc.pool.fetch(
        f"SELECT {', '.join('t.' + c.strip() for c in r.TX_COLUMNS.split(','))} FROM wd_txs t "
        "WHERE t.state = 'broadcast' AND t.chain = ANY($2::text[]) "
        "AND t.first_broadcast_at < now() - make_interval(secs => $1) AND NOT EXISTS (SELECT 1 FROM wd_txs n "
        "WHERE n.replaces = t.id AND n.state <> 'failed') ORDER BY t.id", older_than_s, proc.chains))


async def mined_already(proc: Processor, tx: Any) -> bool:
    """Whether `tx` or a version it replaced is in a block (then nothing is to be bumped)."""
    seen: set[int] = set()
    current = tx
    while current is not None and int(current["id"]) not in seen:
        seen.add(int(current["id"]))
        if current["txid"] is not None and (await proc.chain_state(current)).confirmations > 0:
            return True
        if current["replaces"] is None:
            return False
        current = await r.get_tx(proc.pool, int(current["replaces"]))  # type: ignore[arg-type]
    return False


async def auto_bump(proc: Processor, older_than_s: float) -> int:
    state = _state(proc)
    now = time.monotonic()
    moved = 0
    for tx in await stuck(proc, older_than_s):
        tx_id = int(tx["id"])
        if now < state.retry_at.get(tx_id, 0.0):
            continue
        if not await hot_signed(proc.pool, tx):
            if tx_id not in state.told:
                state.told.add(tx_id)
                log.error("ALERT stuck %s", offline_message(tx))
            continue
        if await mined_already(proc, tx):
            continue
        new_id = await proc._guard(bump(proc, tx_id), f"fee bump of {describe(tx)}")
        if new_id:
            moved += 1
        else:
            state.retry_at[tx_id] = time.monotonic() + RETRY_S
    return moved


async def bump(proc: Processor, tx_id: int) -> int:
    """Replace broadcast transaction `tx_id` by one paying a higher fee; returns the new tx id."""
    async with proc.pool.acquire() as conn, conn.transaction():
        old = await r.get_tx(conn, tx_id, lock=True)
        if old is None:
            raise UnknownWithdrawalError(f"no transaction {tx_id}")
        if old["state"] != "broadcast":
            raise WrongStageError(f"transaction {tx_id} is {old['state']}; only a broadcast transaction can be "
                                  "fee-bumped")
        if not await hot_signed(conn, old):
            raise OfflineSignedError(offline_message(old))
        if old["chain"] == "btc" and old["withdrawal_id"] is None:
            # not built today (hot-to-cold PSBTs are signed offline); confirm.check_internal would not
            # retire the losing Bitcoin version, so none is made
            raise WrongStageError(f"{describe(old)}: internal Bitcoin transactions are not fee-bumped by the "
                                  "processor; left to the operator")
        asset = await r.asset_row(conn, old["asset"])
        fields: dict[str, Any] = {
            "withdrawal_id": old["withdrawal_id"], "purpose": old["purpose"], "chain": old["chain"],
            "network": old["network"], "asset": old["asset"], "destination": old["destination"],
            "amount_chain": old["amount_chain"], "replaces": tx_id, "generation": int(old["generation"]) + 1,
            "state": "unsigned", "reason": old["reason"]}
        if old["chain"] == "btc":
            fields.update(await _btc_bump_fields(proc, old))
        else:
            fields.update(await _eth_bump_fields(proc, old, asset))
        await r.update_tx(conn, tx_id, state="replaced")
        new_id = await r.insert_tx(conn, **fields)
        if old["chain"] == "btc":
            await r.move_inputs(conn, tx_id, new_id)
        refused = await proc.sign(conn, await r.get_tx(conn, new_id), asset)
        if refused is not None:
            raise WithdrawalError(f"the hot signer refused the fee bump of transaction {tx_id}: {refused}")
    log.info("%s replaced by %d (higher fee)", describe(old), new_id)
    await proc.broadcast(new_id)
    return new_id


async def _btc_bump_fields(proc: Processor, old: Any) -> dict[str, Any]:
    btc = proc._api("btc")
    old_fee, old_rate = int(old["fee_chain"]), int(old["fee_rate"])
    market = await btc.fee_rate_msat_per_vb(target_blocks=1, floor_msat_per_vb=proc.config.fee_floor_msat_per_vb)
    rate = max(market, old_rate * 5 // 4 + 1)
    _, _, vsize = btc_build.bump_psbt(old["unsigned"], new_fee_sat=old_fee)
    # BIP125 rule 4: the replacement pays at least the relay fee (1 sat/vB) for its own size on top.
    fee = max(btc_build.fee_for(rate, vsize), old_fee + vsize + 1)
    unsigned, _change, vsize = btc_build.bump_psbt(old["unsigned"], new_fee_sat=fee)
    return {"unsigned": unsigned, "txid": btc_build.psbt_txid(unsigned), "fee_chain": Decimal(fee),
            "fee_rate": Decimal(fee * 1000 // vsize)}


async def _eth_bump_fields(proc: Processor, old: Any, asset: Any) -> dict[str, Any]:
    tx = eth_build.loads(old["unsigned"])
    fees = eth_build.bumped(eth_build.tx_fees(tx), floor=await proc.eth_fees())
    new = eth_build.with_fees(tx, fees)
    out: dict[str, Any] = {}
    sender = str(old["from_address"])
    value = int(new["value"])
    cost = eth_build.max_fee_wei(new) + value
    balance = await proc._api("eth").balance_wei(sender)
    if balance < cost:
        extra = eth_build.max_fee_wei(new) - eth_build.max_fee_wei(tx)
        if old["purpose"] == "sweep" and asset["token_contract"] is None and value - extra > 0:
            # an ETH sweep sends the deposit address's whole balance less its gas: the higher fee
            # comes out of what is swept
            new["value"] = str(value - extra)
            out["amount_chain"] = Decimal(value - extra)
        else:
            raise SenderShortError(f"{sender} has {balance} wei; the fee bump of transaction {old['id']} needs up "
                                   f"to {cost} wei")
    out.update({"unsigned": eth_build.dumps(new), "from_address": old["from_address"], "nonce": old["nonce"],
                "fee_chain": Decimal(eth_build.max_fee_wei(new)), "fee_rate": Decimal(fees.max_fee_per_gas_wei),
                "tip_wei": Decimal(fees.max_priority_fee_per_gas_wei)})
    return out
