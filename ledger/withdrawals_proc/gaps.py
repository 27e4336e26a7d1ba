"""Ethereum nonce gaps: a nonce given back (its draft was rejected or refused by the node) while the
hot address already has later transactions leaves those stuck (a node mines nonces in order only).
The next withdrawal reuses the nonce; when none took it in a pass, `fill_nonce_gaps` sends a filler —
1 wei from the hot address to itself, signed under the policy asset `GAS:ETH` — so nothing waits on
a nonce nobody will use. A refused filler is retried after `retry_s`.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING

from ledger.withdrawals_proc import eth_build
from ledger.withdrawals_proc import repo as r

if TYPE_CHECKING:
    from ledger.withdrawals_proc.processor import Processor

log = logging.getLogger("ledger.withdrawals")
FILLER_WEI = 1


async def fill_nonce_gaps(proc: Processor, *, retry_s: float = 60.0) -> int:
    if proc.eth is None or time.monotonic() < proc.gap_retry_at:
        return 0
    hot = proc.keys.eth_hot_address
    free = await proc.pool.fetch(
        "SELECT f.network, f.nonce FROM wd_eth_free_nonces f WHERE f.address = $1 AND EXISTS (SELECT 1 FROM wd_txs t "
        "WHERE t.chain = 'eth' AND t.network = f.network AND t.from_address = f.address AND t.nonce > f.nonce "
        "AND t.state IN ('signed', 'broadcast', 'replaced')) ORDER BY f.nonce", hot.lower())
    filled = 0
    for row in free:
        async with proc.pool.acquire() as conn, conn.transaction():
            asset = await conn.fetchrow("SELECT * FROM assets WHERE chain = 'eth' AND network = $1 "
                                        "AND token_contract IS NULL ORDER BY code LIMIT 1", row["network"])
            if asset is None:
                return filled
            nonce = await r.allocate_nonce(conn, row["network"], hot, await proc._api("eth").nonce(hot, "pending"))
            fees = await proc.eth_fees()
            tx = eth_build.transfer_tx(chain_id=await proc.eth_chain_id(), nonce=nonce, destination=hot,
                                       amount=FILLER_WEI, fees=fees, derivation_path=proc.keys.eth_hot_path,
                                       token_contract=None)
            tx_id = await r.insert_tx(
                conn, withdrawal_id=None, purpose="gas", chain="eth", network=row["network"], asset=asset["code"],
                destination=hot, amount_chain=Decimal(FILLER_WEI), fee_chain=Decimal(eth_build.max_fee_wei(tx)),
                fee_rate=Decimal(fees.max_fee_per_gas_wei), tip_wei=Decimal(fees.max_priority_fee_per_gas_wei),
                from_address=hot.lower(), nonce=nonce, unsigned=eth_build.dumps(tx), state="unsigned",
                reason="nonce gap filler")
            draft = await r.get_tx(conn, tx_id)
            refused = await proc.sign(conn, draft, asset)
            if refused is not None:
                await proc.abandon(conn, draft, f"nonce gap filler refused: {refused}")
                proc.gap_retry_at = time.monotonic() + retry_s
                log.error("ALERT nonce %d of %s blocks later transactions; the filler was refused: %s", nonce, hot,
                          refused)
                return filled
        log.warning("nonce %d of %s was free below later transactions: filler sent", nonce, hot)
        filled += 1
    return filled
