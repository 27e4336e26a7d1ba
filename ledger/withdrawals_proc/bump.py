"""Fee bumps of stuck transactions: Bitcoin RBF (same coins, same payment, a higher fee taken from the
change; BIP125 rules 3 and 4) and Ethereum replacement (same nonce, fees +12.5%, at least the current
market). The replacement is signed by the hot signer and persisted in the transaction that marks the
original `replaced` (it may still confirm instead: both are watched), then broadcast.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ledger.withdrawals_proc import btc_build, eth_build
from ledger.withdrawals_proc import repo as r
from ledger.withdrawals_proc.errors import UnknownWithdrawalError, WithdrawalError, WrongStageError

if TYPE_CHECKING:
    from ledger.withdrawals_proc.processor import Processor

log = logging.getLogger("ledger.withdrawals")


async def auto_bump(proc: Processor, older_than_s: float) -> int:
    rows = await proc.pool.fetch(
        "SELECT t.id FROM wd_txs t WHERE t.state = 'broadcast' AND t.withdrawal_id IS NOT NULL "
        "AND t.chain = ANY($2::text[]) "
        "AND t.first_broadcast_at < now() - make_interval(secs => $1) AND NOT EXISTS (SELECT 1 FROM wd_txs n "
        "WHERE n.replaces = t.id AND n.state <> 'failed') ORDER BY t.id", older_than_s, proc.chains)
    moved = 0
    for row in rows:
        tx = await r.get_tx(proc.pool, int(row["id"]))  # type: ignore[arg-type]
        if (await proc.chain_state(tx)).confirmations > 0:
            continue
        moved += await proc._guard(bump(proc, int(row["id"])), f"fee bump of transaction {row['id']}")
    return moved

async def bump(proc: Processor, tx_id: int) -> int:
    """Replace broadcast transaction `tx_id` by one paying a higher fee; returns the new tx id."""
    async with proc.pool.acquire() as conn, conn.transaction():
        old = await r.get_tx(conn, tx_id, lock=True)
        if old is None:
            raise UnknownWithdrawalError(f"no transaction {tx_id}")
        if old["state"] != "broadcast" or old["withdrawal_id"] is None:
            raise WrongStageError(f"transaction {tx_id} is {old['state']}; only a broadcast withdrawal "
                                  "transaction can be fee-bumped")
        asset = await r.asset_row(conn, old["asset"])
        fields: dict[str, Any] = {
            "withdrawal_id": old["withdrawal_id"], "purpose": old["purpose"], "chain": old["chain"],
            "network": old["network"], "asset": old["asset"], "destination": old["destination"],
            "amount_chain": old["amount_chain"], "replaces": tx_id, "generation": int(old["generation"]) + 1,
            "state": "unsigned"}
        await r.update_tx(conn, tx_id, state="replaced")
        if old["chain"] == "btc":
            fields.update(await _btc_bump_fields(proc, old))
        else:
            fields.update(await _eth_bump_fields(proc, old))
        new_id = await r.insert_tx(conn, **fields)
        if old["chain"] == "btc":
            await r.move_inputs(conn, tx_id, new_id)
        refused = await proc.sign(conn, await r.get_tx(conn, new_id), asset)
        if refused is not None:
            raise WithdrawalError(f"the hot signer refused the fee bump of transaction {tx_id}: {refused}")
    log.info("transaction %d replaced by %d (higher fee)", tx_id, new_id)
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

async def _eth_bump_fields(proc: Processor, old: Any) -> dict[str, Any]:
    tx = eth_build.loads(old["unsigned"])
    fees = eth_build.bumped(eth_build.tx_fees(tx), floor=await proc.eth_fees())
    new = eth_build.with_fees(tx, fees)
    return {"unsigned": eth_build.dumps(new), "from_address": old["from_address"], "nonce": old["nonce"],
            "fee_chain": Decimal(eth_build.max_fee_wei(new)), "fee_rate": Decimal(fees.max_fee_per_gas_wei),
            "tip_wei": Decimal(fees.max_priority_fee_per_gas_wei)}
