"""Hot signer service: the hot keystore unlocked in-process, signing only what the policy allows.

Used by the withdrawal processor as a library (no network listener): `HotSigner.from_keystore`
unlocks the hot keystore at start; `account_xpubs()` exports the hot account extended public
keys for the wallet; `sign_btc` / `sign_eth` check that the unsigned transaction pays exactly
the requested amount to the requested destination (change verified by derivation, fee caps as
in the cold signer), then ask the policy (`signer.policy_store.decide`, serialised per asset,
recorded with who/what/which rule) and sign only when approved. A refusal is returned as a
`HotSignResult` with `approved=False` and a reason, so the withdrawal can go to the cold path.

The caller owns the database transaction: `async with pool.acquire() as conn, conn.transaction():`
around the call; it must commit before broadcasting the returned transaction, since the commit
is what makes the spend count against the windows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signer import keystore
from signer.errors import EthTxRefusedError, PsbtRefusedError
from signer.eth_sign import (
    DEFAULT_MAX_FEE_WEI,
    ERC20_TRANSFER_SELECTOR,
    derive_eth_key,
    parse_address,
    parse_eth_tx,
    sign_eth_tx,
)
from signer.hd import AccountExport, account_export, root_key
from signer.policy import Policy, SignRequest, normalize_destination
from signer.psbt_sign import FeeCaps, analyze, parse_psbt, serialize_psbt, sign_checked

if TYPE_CHECKING:
    import asyncpg

TX_CHECK_RULE = "transaction-check"


@dataclass(frozen=True, slots=True)
class HotSignResult:
    request_id: str
    approved: bool
    rule: str | None
    reason: str
    signed: str | None = None  # base64 PSBT (Bitcoin) or 0x raw transaction (Ethereum)
    txid: str | None = None


class HotSigner:
    """Holds the unlocked hot seed; repr shows only the fingerprint."""

    def __init__(
        self,
        seed: keystore.UnlockedSeed,
        policy: Policy,
        *,
        network: str,
        eth_chain_id: int | None = None,
        fee_caps: FeeCaps | None = None,
        max_fee_wei: int = DEFAULT_MAX_FEE_WEI,
        require_non_witness_utxo: bool = True,
    ) -> None:
        self._seed = seed
        self._root = root_key(seed, network)
        self._eth_root = root_key(seed, "mainnet")
        self.policy = policy
        self.network = network
        self.eth_chain_id = eth_chain_id
        self.fee_caps = fee_caps or FeeCaps()
        self.max_fee_wei = max_fee_wei
        self.require_non_witness_utxo = require_non_witness_utxo

    @classmethod
    def from_keystore(cls, path: Path, passphrase: str, policy: Policy, *, network: str, **kwargs: Any) -> HotSigner:
        return cls(keystore.load(path, passphrase), policy, network=network, **kwargs)

    @property
    def fingerprint(self) -> str:
        return self._seed.fingerprint

    def __repr__(self) -> str:
        return f"HotSigner(fingerprint={self.fingerprint!r}, network={self.network!r})"

    def account_xpubs(self, account: int = 0) -> list[AccountExport]:
        """Hot account keys for the wallet: BTC P2WPKH and P2TR on this network, and Ethereum."""
        return [
            account_export(self._seed, "btc", self.network, account, "p2wpkh"),
            account_export(self._seed, "btc", self.network, account, "p2tr"),
            account_export(self._seed, "eth", self.network, account, None),
        ]

    async def _refuse(self, conn: asyncpg.Connection, request: SignRequest, reason: str, digest: str,
                      now: datetime | None) -> HotSignResult:
        from signer.policy_store import record_refusal

        await record_refusal(conn, request, rule=TX_CHECK_RULE, reason=reason, tx_digest=digest,
                             signer_fingerprint=self.fingerprint, now=now)
        return HotSignResult(request.request_id, False, TX_CHECK_RULE, reason)

    async def sign_btc(
        self,
        conn: asyncpg.Connection,
        *,
        request_id: str,
        requested_by: str,
        asset: str,
        destination: str,
        amount_sat: int,
        psbt: str | bytes,
        now: datetime | None = None,
    ) -> HotSignResult:
        """Sign a withdrawal PSBT paying `amount_sat` to `destination` if the policy allows it."""
        from signer.policy_store import decide, set_txid

        raw = psbt.encode() if isinstance(psbt, str) else psbt
        request = SignRequest(request_id, requested_by, asset, "btc", destination, amount_sat)
        try:
            parsed, _form = parse_psbt(raw)
            summary = analyze(parsed, self._root, self.fingerprint, self.network, self.fee_caps,
                              require_non_witness_utxo=self.require_non_witness_utxo)
        except PsbtRefusedError as exc:
            return await self._refuse(conn, request, str(exc), hashlib.sha256(raw).hexdigest(), now)
        external = [o for o in summary.outputs if not o.is_change]
        if (len(external) != 1 or normalize_destination(external[0].address) != normalize_destination(destination)
                or external[0].amount_sat != amount_sat):
            paid = ", ".join(f"{o.amount_sat} sat to {o.address}" for o in external) or "nothing"
            reason = f"transaction pays {paid}, not exactly {amount_sat} sat to {destination}"
            return await self._refuse(conn, request, reason, summary.digest.hex(), now)
        recorded = await decide(conn, self.policy, request, tx_digest=summary.digest.hex(),
                                signer_fingerprint=self.fingerprint, now=now)
        decision = recorded.decision
        if not decision.approved:
            return HotSignResult(request_id, False, decision.rule, decision.reason)
        sign_checked(parsed, self._root, summary)
        await set_txid(conn, request_id, summary.txid)
        signed = serialize_psbt(parsed, "base64").decode().strip()
        return HotSignResult(request_id, True, decision.rule, decision.reason, signed, summary.txid)

    async def sign_eth(
        self,
        conn: asyncpg.Connection,
        *,
        request_id: str,
        requested_by: str,
        asset: str,
        destination: str,
        amount_chain_units: int,
        tx_json: str | bytes,
        token_contract: str | None = None,
        now: datetime | None = None,
    ) -> HotSignResult:
        """Sign an ETH (or ERC-20 `transfer`, when `token_contract` is given) withdrawal if allowed."""
        from signer.policy_store import decide, set_txid

        request = SignRequest(request_id, requested_by, asset, "eth", destination, amount_chain_units)
        raw = tx_json.encode() if isinstance(tx_json, str) else tx_json
        try:
            tx = parse_eth_tx(raw)
            digest = hashlib.sha256(tx.signing_payload()).hexdigest()
            self._check_eth(tx, destination, amount_chain_units, token_contract)
        except EthTxRefusedError as exc:
            return await self._refuse(conn, request, str(exc), hashlib.sha256(raw).hexdigest(), now)
        recorded = await decide(conn, self.policy, request, tx_digest=digest, signer_fingerprint=self.fingerprint,
                                now=now)
        decision = recorded.decision
        if not decision.approved:
            return HotSignResult(request_id, False, decision.rule, decision.reason)
        key = derive_eth_key(self._eth_root, tx.derivation_path)
        signed = sign_eth_tx(tx, key, max_fee_wei=self.max_fee_wei)
        await set_txid(conn, request_id, signed.tx_hash)
        return HotSignResult(request_id, True, decision.rule, decision.reason, signed.raw_hex, signed.tx_hash)

    def _check_eth(self, tx: Any, destination: str, amount: int, token_contract: str | None) -> None:
        if self.eth_chain_id is not None and tx.chain_id != self.eth_chain_id:
            raise EthTxRefusedError(f"chain id {tx.chain_id} is not this signer's chain {self.eth_chain_id}")
        if tx.max_fee_wei > self.max_fee_wei:
            raise EthTxRefusedError(f"maximum fee {tx.max_fee_wei} wei is above the cap of {self.max_fee_wei} wei")
        dest = parse_address(destination, "destination")
        if token_contract is None:
            if tx.to != dest or tx.value_wei != amount or tx.data:
                raise EthTxRefusedError(f"transaction does not send exactly {amount} wei to {destination}")
            return
        contract = parse_address(token_contract, "token_contract")
        expected = ERC20_TRANSFER_SELECTOR + bytes(12) + dest + amount.to_bytes(32, "big")
        if tx.to != contract or tx.value_wei != 0 or tx.data != expected:
            raise EthTxRefusedError(f"transaction is not transfer({destination}, {amount}) on {token_contract}")
