"""Confirmation of broadcast transactions: settle or release at the required confirmations, re-broadcast
what a reorg or a mempool dropped (the stored bytes, never a rebuilt transaction), and keep watching
settled transactions for a while in case a deeper reorg takes them out.

Functions of a `Processor` (they use its pool, chain APIs and signer); each ledger change happens in
one PostgreSQL transaction with the state change of the transaction that caused it.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ledger.withdrawals import release_withdrawal, settle_withdrawal
from ledger.withdrawals_proc import repo as r
from ledger.withdrawals_proc.errors import BroadcastRejectedError

if TYPE_CHECKING:
    from ledger.withdrawals_proc.processor import ChainState, Processor

log = logging.getLogger("ledger.withdrawals")


async def check(proc: Processor, wid: int) -> int:
    """Settle at the required confirmations; re-broadcast what the chain lost."""
    async with proc.pool.acquire() as conn:
        txs = [t for t in await r.txs_of(conn, wid) if t["state"] in r.LIVE_TX_STATES]
        asset = await r.asset_row(conn, (await conn.fetchval("SELECT asset FROM withdrawals WHERE id = $1", wid)))
    if not txs:
        return 0
    required = int(asset["required_confirmations"])
    states = [(t, await proc.chain_state(t)) for t in txs]
    done = [(t, s) for t, s in states if s.confirmations >= required]
    if done:
        tx, state = done[0]
        return await _finish(proc, wid, tx, state, [t for t, _ in states if t["id"] != tx["id"]])
    if not any(s.found for _, s in states):
        newest = max(txs, key=lambda t: int(t["generation"]))
        try:
            await proc._api(newest["chain"]).send(newest["signed"], newest["txid"])
        except BroadcastRejectedError as exc:
            # Not released automatically: a transaction that was out once may still be mined from
            # another node's mempool. An operator decides (`coffer withdrawals show` gives the reason).
            log.error("ALERT re-broadcast of %s (withdrawal %d) refused: %s", newest["txid"], wid, exc)
            await proc.pool.execute("UPDATE wd_proc SET reason = $2, updated_at = now() WHERE withdrawal_id = $1",
                                    wid, f"dropped and re-broadcast refused: {exc}"[:500])
            return 0
        await proc.pool.execute("UPDATE wd_txs SET broadcasts = broadcasts + 1, last_broadcast_at = now() "
                                "WHERE id = $1", newest["id"])
        log.warning("transaction %s of withdrawal %d was dropped from the chain: re-broadcast as stored",
                    newest["txid"], wid)
        return 1
    return 0

async def _finish(proc: Processor, wid: int, tx: Any, state: ChainState, others: list[Any]) -> int:
    async with proc.pool.acquire() as conn, conn.transaction():
        stage = await conn.fetchval("SELECT stage FROM wd_proc WHERE withdrawal_id = $1 FOR UPDATE", wid)
        if stage != "broadcast":
            return 0
        await r.update_tx(conn, int(tx["id"]), state="confirmed", confirmed_height=state.height,
                          network_fee_chain=None if state.fee_paid is None else Decimal(state.fee_paid))
        for other in others:
            await r.update_tx(conn, int(other["id"]), state="failed", reason=f"conflicts with {tx['txid']}")
        if state.succeeded:
            await settle_withdrawal(conn, withdrawal_id=wid, txid=tx["txid"])
            await r.set_stage(conn, wid, "done")
            log.info("withdrawal %d settled: %s confirmed at height %s", wid, tx["txid"], state.height)
        else:
            await release_withdrawal(conn, withdrawal_id=wid, reason=f"transaction {tx['txid']} reverted")
            await r.set_stage(conn, wid, "failed", reason=f"transaction {tx['txid']} reverted on chain")
            log.error("withdrawal %d: transaction %s reverted; hold released", wid, tx["txid"])
    return 1

async def check_internal(proc: Processor) -> int:
    """Sweeps, gas top-ups and hot -> cold moves: confirmed at the asset's confirmations (the
    ledger is not touched: custody moves between our own addresses); re-broadcast if dropped."""
    rows = await proc.pool.fetch(
        f"SELECT {r.TX_COLUMNS} FROM wd_txs WHERE withdrawal_id IS NULL AND state = ANY($1::text[]) "
        "AND chain = ANY($2::text[]) ORDER BY id", list(r.LIVE_TX_STATES), proc.chains)
    moved = 0
    for tx in rows:
        state = await proc.chain_state(tx)
        required = int((await r.asset_row(proc.pool, tx["asset"]))["required_confirmations"])  # type: ignore[arg-type]
        if state.confirmations >= required:
            async with proc.pool.acquire() as conn, conn.transaction():
                await r.update_tx(conn, int(tx["id"]), state="confirmed" if state.succeeded else "failed",
                                  confirmed_height=state.height,
                                  network_fee_chain=None if state.fee_paid is None else Decimal(state.fee_paid))
                if tx["nonce"] is not None:  # other transactions at this nonce can never confirm now
                    await conn.execute(
                        "UPDATE wd_txs SET state = 'failed', reason = 'another transaction took its nonce', "
                        "updated_at = now() WHERE chain = $1 AND network = $2 AND from_address = $3 AND nonce = $4 "
                        "AND id <> $5 AND state = ANY($6::text[])", tx["chain"], tx["network"], tx["from_address"],
                        tx["nonce"], tx["id"], list(r.LIVE_TX_STATES))
            moved += 1
        elif not state.found and tx["state"] == "broadcast":
            try:
                await proc._api(tx["chain"]).send(tx["signed"], tx["txid"])
            except BroadcastRejectedError as exc:
                log.warning("re-broadcast of internal transaction %s refused: %s", tx["txid"], exc)
    return moved

async def recheck_settled(proc: Processor, window_s: float) -> int:
    """A settled transaction that a reorg deeper than the required confirmations took out of the
    chain is re-broadcast as stored (the same transaction: nothing is paid or settled twice)."""
    rows = await proc.pool.fetch(
        f"SELECT {r.TX_COLUMNS} FROM wd_txs WHERE state = 'confirmed' AND chain = ANY($2::text[]) "
        "AND updated_at > now() - make_interval(secs => $1) ORDER BY id", window_s, proc.chains)
    moved = 0
    for tx in rows:
        if (await proc.chain_state(tx)).found:
            continue
        try:
            await proc._api(tx["chain"]).send(tx["signed"], tx["txid"])
        except BroadcastRejectedError as exc:
            log.error("ALERT settled transaction %s left the chain and cannot be re-broadcast: %s", tx["txid"], exc)
            continue
        await proc.pool.execute("UPDATE wd_txs SET broadcasts = broadcasts + 1, last_broadcast_at = now() "
                                "WHERE id = $1", tx["id"])
        log.error("ALERT settled transaction %s was taken out of the chain by a deep reorg: re-broadcast",
                  tx["txid"])
        moved += 1
    return moved
