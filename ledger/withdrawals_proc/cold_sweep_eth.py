"""Hot Ethereum above its cap to the cold address: ETH and ERC-20 tokens (USDT), signed by the hot signer.

Unlike Bitcoin (a PSBT exported for offline signing), these moves are signed by the hot signer at
once: money moves INTO cold custody, and the hot signer signs them only under the policy assets
`COLD:ETH` / `COLD:<token>`, whose rules the operator gives an allow-list holding the cold address
alone (`{"name": "cold-eth", "asset": "COLD:ETH", "allowed_destinations": ["0x<cold>"]}`). A
compromised hot host can then only push funds to cold; a move to any other destination is refused
by the signer (nothing is sent: the draft is abandoned, its nonce given back, the refusal logged
with its reason and retried after `retry_s`). Signing offline instead would keep the move's hot
nonce from export until import, so every later hot withdrawal would wait behind it.

The cold address is `<account>/0/0` of the cold Ethereum account xpub printed by
`coffer-signer xpub --chain eth` (COFFER_WITHDRAWALS_COLD_ETH_XPUB). One pass, per capped token
first and then ETH (so the ETH move leaves the tokens' gas behind), each in one PostgreSQL
transaction that holds the hot sender's nonce-counter row:
- the hot address's balances are read at one block B, with its nonce at B;
- what hot work still spends is subtracted: every stored transaction from the hot address not mined
  at B (nonce >= its nonce at B; per nonce the dearest of a transaction and its fee bumps: amount
  for ETH + maximum fee), and every held withdrawal of the chain not built yet (its amount + gas);
- when what is left exceeds the cap, the excess down to half the cap is sent to cold (for ETH, less
  the move's own maximum fee); a token move needs the gas left in ETH, else it waits;
- the nonce comes from the nonce manager, the transaction is signed and stored (state `signed`)
  in that transaction, then broadcast; `Processor.check_internal` confirms it like the other
  internal moves. The ledger is not touched (custody moves between our own addresses).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ledger.withdrawals_proc import eth_build
from ledger.withdrawals_proc import repo as r
from ledger.withdrawals_proc.errors import ProcessorConfigError

if TYPE_CHECKING:
    import asyncpg

    from ledger.withdrawals_proc.processor import Processor

log = logging.getLogger("ledger.withdrawals.sweep")
PENDING_STATES = ("unsigned", "signed", "broadcast", "replaced", "confirmed")
COLD_INDEX, COLD_CHANGE = 0, 0


def cold_eth_address(xpub: str, network: str) -> str:
    """Address `<account>/0/0` of the cold Ethereum account xpub (`coffer-signer xpub --chain eth`)."""
    from wallet.derive import open_account
    from wallet.errors import WalletError

    try:
        return str(open_account(xpub, "eth", network, None).address(COLD_INDEX, COLD_CHANGE))
    except WalletError as exc:
        raise ProcessorConfigError(f"COFFER_WITHDRAWALS_COLD_ETH_XPUB: {exc}") from None


class EthColdSweeper:
    def __init__(self, proc: Processor, *, xpub: str, cap_eth_wei: int | None,
                 token_caps: tuple[tuple[str, int], ...], retry_s: float = 60.0) -> None:
        self.proc = proc
        self.cap_eth_wei = cap_eth_wei
        self.token_caps = dict(token_caps)
        self.retry_s = retry_s
        self.cold_address = cold_eth_address(xpub, proc.keys.btc_network)
        if self.cold_address.lower() == proc.keys.eth_hot_address.lower():
            raise ProcessorConfigError("the cold Ethereum address is the hot address: give the COLD account xpub")
        self.retry_at: dict[str, float] = {}  # asset -> monotonic time before which a refused move waits
        self._warned_unknown = False

    async def step(self) -> int:
        proc = self.proc
        async with proc.pool.acquire() as conn:
            eth_asset = await conn.fetchrow("SELECT * FROM assets WHERE code = 'ETH'")
            if eth_asset is None:
                return 0
            tokens = await conn.fetch("SELECT * FROM assets WHERE chain = 'eth' AND network = $1 "
                                      "AND token_contract IS NOT NULL AND code = ANY($2::text[]) ORDER BY code",
                                      eth_asset["network"], list(self.token_caps))
        unknown = set(self.token_caps) - {str(t["code"]) for t in tokens}
        if unknown and not self._warned_unknown:
            self._warned_unknown = True
            log.error("hot to cold: no ERC-20 asset %s on %s: its COFFER_WITHDRAWALS_HOT_CAP_* is not applied",
                      ", ".join(sorted(unknown)), eth_asset["network"])
        moved = 0
        for token in tokens:
            moved += await self.move(token, self.token_caps[token["code"]])
        if self.cap_eth_wei is not None:
            moved += await self.move(eth_asset, self.cap_eth_wei)
        return moved

    async def _token_balance(self, token: str, owner: str, block: int) -> int:
        from watchers.ethrpc import hex_int

        data = "0x70a08231" + bytes(12).hex() + owner[2:].lower()  # balanceOf(address), EIP-20
        return hex_int(await self.proc._api("eth").call("eth_call", [{"to": token, "data": data}, hex(block)]),
                       "balanceOf")

    async def pending_spend(self, conn: asyncpg.Connection, network: str, mined_nonce: int,
                            token_code: str | None, fees: eth_build.Fees) -> tuple[int, int]:
        """(wei, token units) that hot work not mined at the block of `mined_nonce` will still spend."""
        hot = self.proc.keys.eth_hot_address.lower()
        rows = await conn.fetch(
            "SELECT t.nonce, max(CASE WHEN a.token_contract IS NULL THEN t.amount_chain ELSE 0 END + t.fee_chain) "
            "AS wei, max(CASE WHEN t.asset = $4 THEN t.amount_chain ELSE 0 END) AS units "
            "FROM wd_txs t JOIN assets a ON a.code = t.asset WHERE t.chain = 'eth' AND t.network = $1 "
            "AND t.from_address = $2 AND t.nonce >= $3 AND t.state = ANY($5::text[]) GROUP BY t.nonce",
            network, hot, mined_nonce, token_code, list(PENDING_STATES))
        wei = sum(int(x["wei"]) for x in rows)
        units = sum(int(x["units"]) for x in rows)
        # held withdrawals not built yet (new, waiting for funds, in review): paid from the hot address too
        held = await conn.fetch(
            "SELECT w.asset, w.amount, w.fee, a.chain_decimals, a.ledger_decimals, a.token_contract "
            "FROM withdrawals w JOIN assets a ON a.code = w.asset WHERE w.state = 'held' AND a.chain = 'eth' "
            "AND a.network = $1 AND NOT EXISTS (SELECT 1 FROM wd_txs t WHERE t.withdrawal_id = w.id "
            "AND t.state = ANY($2::text[]))", network, list(PENDING_STATES))
        from ledger.withdrawals_proc.processor import chain_amount

        for w in held:
            amount = chain_amount(int(w["amount"]), int(w["fee"]), w)
            gas = eth_build.ERC20_TRANSFER_GAS if w["token_contract"] else eth_build.ETH_TRANSFER_GAS
            wei += gas * fees.max_fee_per_gas_wei + (0 if w["token_contract"] else amount)
            units += amount if w["asset"] == token_code else 0
        return wei, units

    async def move(self, asset: Any, cap: int) -> int:
        """Move what the hot address holds of `asset` above `cap` down to `cap // 2`; 1 if a move was sent."""
        proc = self.proc
        code = str(asset["code"])
        if time.monotonic() < self.retry_at.get(code, 0.0):
            return 0
        eth = proc._api("eth")
        hot = proc.keys.eth_hot_address
        network = str(asset["network"])
        token = asset["token_contract"]
        fees = await proc.eth_fees()
        chain_id = await proc.eth_chain_id()
        gas_wei = (eth_build.ERC20_TRANSFER_GAS if token else eth_build.ETH_TRANSFER_GAS) * fees.max_fee_per_gas_wei
        async with proc.pool.acquire() as conn, conn.transaction():
            # Serialise with every other transaction from the hot address (they all take this row
            # FOR UPDATE to allocate a nonce): what they spend is then in the sum below.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('wd_hot_to_cold_eth'))")
            await conn.execute("SELECT 1 FROM wd_eth_nonces WHERE network = $1 AND address = $2 FOR UPDATE",
                               network, hot.lower())
            block = await eth.block_number()
            mined_nonce = await eth.nonce(hot, hex(block))
            balance_wei = await eth.balance_wei(hot, block)
            balance = await self._token_balance(token, hot, block) if token else balance_wei
            spend_wei, spend_units = await self.pending_spend(conn, network, mined_nonce, code if token else None,
                                                              fees)
            free_wei = balance_wei - spend_wei
            free = balance - spend_units if token else free_wei
            if free <= cap:
                return 0
            amount = free - cap // 2 - (0 if token else gas_wei)
            if amount <= 0:
                return 0
            if token and free_wei < gas_wei:
                log.warning("hot to cold: %s above its cap (%d > %d) but the hot address lacks the gas (%d wei free, "
                            "%d needed)", code, free, cap, free_wei, gas_wei)
                return 0
            nonce = await r.allocate_nonce(conn, network, hot, await eth.nonce(hot, "pending"))
            tx = eth_build.transfer_tx(chain_id=chain_id, nonce=nonce, destination=self.cold_address, amount=amount,
                                       fees=fees, derivation_path=proc.keys.eth_hot_path, token_contract=token)
            tx_id = await r.insert_tx(
                conn, withdrawal_id=None, purpose="cold", chain="eth", network=network, asset=code,
                destination=self.cold_address, amount_chain=Decimal(amount),
                fee_chain=Decimal(eth_build.max_fee_wei(tx)), fee_rate=Decimal(fees.max_fee_per_gas_wei),
                tip_wei=Decimal(fees.max_priority_fee_per_gas_wei), from_address=hot.lower(), nonce=nonce,
                unsigned=eth_build.dumps(tx), state="unsigned")
            draft = await r.get_tx(conn, tx_id)
            refused = await proc.sign(conn, draft, asset)
            if refused is not None:
                await proc.abandon(conn, draft, f"hot policy refused: {refused}")
                self.retry_at[code] = time.monotonic() + self.retry_s
                log.error("ALERT hot to cold: %d %s to %s refused by the hot policy, nothing moved: %s", amount, code,
                          self.cold_address, refused)
                return 0
        log.warning("hot address holds %d %s (free of pending work), above its cap of %d: %d sent to cold address %s "
                    "(nonce %d)", free, code, cap, amount, self.cold_address, nonce)
        await proc._guard(proc.broadcast(tx_id), f"hot to cold transaction {tx_id}")  # else the next pass sends it
        return 1
