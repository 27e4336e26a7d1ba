"""The cold path and the operator's decisions: review, approve, reject, export, import.

A withdrawal the hot policy refused waits in stage `review`. `approve` builds its unsigned
transaction (PSBT, or Ethereum transaction JSON), stores it (coins / nonce reserved) and writes
it to the export folder (stage `cold`); an officer signs the file offline with `coffer-signer
sign` / `sign-eth`; `import_signed` checks that the signed file is exactly the stored draft
(same Bitcoin txid; same Ethereum fields, signed by the hot sender) and stores it (stage
`signed`), after which the processor broadcasts it like any other. `reject` abandons any draft
(coins and nonce given back) and releases the hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.withdrawals import release_withdrawal
from ledger.withdrawals_proc import btc_build
from ledger.withdrawals_proc import repo as r
from ledger.withdrawals_proc.errors import BuildError, UnknownWithdrawalError, WrongStageError
from ledger.withdrawals_proc.processor import store_signed

if TYPE_CHECKING:
    import asyncpg

    from ledger.withdrawals_proc.processor import Processor


def export_name(tx: Any) -> str:
    ext = "psbt" if tx["chain"] == "btc" else "json"
    return f"wd{tx['withdrawal_id'] or 0}-tx{tx['id']}-{tx['asset'].lower()}.{ext}"


def write_export(folder: Path, tx: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / export_name(tx)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(str(tx["unsigned"]).strip() + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


async def approve(proc: Processor, withdrawal_id: int) -> tuple[int, Path | None]:
    """Build the cold-path draft of a withdrawal in review; returns (tx id, exported file or None)."""
    async with proc.pool.acquire() as conn, conn.transaction():
        w, asset = await proc._withdrawal(conn, withdrawal_id)
        if w["stage"] != "review" or w["state"] != "held":
            raise WrongStageError(f"withdrawal {withdrawal_id} is {w['stage']}; only one in review can be approved")
        tx_id, _ = await proc.build_draft(conn, w, asset)
        await r.set_stage(conn, withdrawal_id, "cold", path="cold", reason="approved for offline signing")
        tx = await r.get_tx(conn, tx_id)
    path = write_export(proc.config.export_dir, tx) if proc.config.export_dir is not None else None
    return tx_id, path


async def reject(pool: asyncpg.Pool, withdrawal_id: int, reason: str) -> None:
    """Refuse a withdrawal not yet signed: drafts abandoned, hold released."""
    async with pool.acquire() as conn, conn.transaction():
        stage = await conn.fetchval("SELECT stage FROM wd_proc WHERE withdrawal_id = $1 FOR UPDATE", withdrawal_id)
        if stage is None:
            raise UnknownWithdrawalError(f"no withdrawal {withdrawal_id} taken up by the processor")
        if stage not in ("new", "review", "cold"):
            raise WrongStageError(f"withdrawal {withdrawal_id} is {stage}; only one not yet signed can be rejected")
        for tx in await r.txs_of(conn, withdrawal_id):
            if tx["state"] == "unsigned":
                await r.update_tx(conn, int(tx["id"]), state="abandoned", reason=f"rejected: {reason}")
                if tx["chain"] == "btc":
                    await r.free_inputs(conn, int(tx["id"]))
                elif tx["nonce"] is not None:
                    await r.give_back_nonce(conn, tx["network"], tx["from_address"], int(tx["nonce"]))
        await release_withdrawal(conn, withdrawal_id=withdrawal_id, reason=f"rejected by an operator: {reason}")
        await r.set_stage(conn, withdrawal_id, "failed", reason=f"rejected: {reason}")


async def export_all(pool: asyncpg.Pool, folder: Path) -> list[Path]:
    rows = await pool.fetch(f"SELECT {r.TX_COLUMNS} FROM wd_txs WHERE state = 'unsigned' ORDER BY id")
    return [write_export(folder, tx) for tx in rows]


def _eth_signed_fields(raw_hex: str) -> tuple[str, int, bytes]:
    """(sender, nonce, signing payload) of a signed type-2 transaction."""
    import rlp
    from eth_account import Account

    raw = bytes.fromhex(raw_hex[2:] if raw_hex.startswith("0x") else raw_hex)
    if raw[:1] != b"\x02":
        raise BuildError("the signed Ethereum transaction is not a type-2 (EIP-1559) transaction")
    try:
        fields = rlp.decode(raw[1:])
        sender = str(Account.recover_transaction(raw))
    except Exception as exc:
        raise BuildError(f"cannot decode the signed Ethereum transaction: {exc}") from None
    return sender, int.from_bytes(fields[1], "big"), b"\x02" + rlp.encode(fields[:9])


async def import_signed(pool: asyncpg.Pool, text: str) -> int:
    """Store a transaction signed offline; returns its tx id. Refuses anything but a stored draft."""
    from signer.eth_sign import parse_eth_tx

    signed = text.strip()
    async with pool.acquire() as conn, conn.transaction():
        if signed.startswith("0x"):
            sender, nonce, payload = _eth_signed_fields(signed)
            tx = await conn.fetchrow(
                f"SELECT {r.TX_COLUMNS} FROM wd_txs WHERE chain = 'eth' AND state = 'unsigned' AND from_address = $1 "
                "AND nonce = $2 FOR UPDATE", sender.lower(), nonce)
            if tx is None:
                raise BuildError(f"no unsigned draft from {sender} with nonce {nonce} waits for a signature")
            if parse_eth_tx(tx["unsigned"]).signing_payload() != payload:
                raise BuildError(f"the signed transaction differs from draft {tx['id']}; not imported")
        else:
            try:
                txid = btc_build.psbt_txid(signed)
            except Exception as exc:
                raise BuildError(f"not a signed PSBT (base64) nor a 0x Ethereum transaction: {exc}") from None
            tx = await conn.fetchrow(
                f"SELECT {r.TX_COLUMNS} FROM wd_txs WHERE chain = 'btc' AND state = 'unsigned' AND txid = $1 "
                "FOR UPDATE", txid)
            if tx is None:
                raise BuildError(f"no unsigned draft of transaction {txid} waits for a signature")
        await store_signed(conn, tx, signed)
        if tx["withdrawal_id"] is not None:
            await conn.execute("UPDATE wd_proc SET stage = 'signed', updated_at = now() "
                               "WHERE withdrawal_id = $1 AND stage = 'cold'", tx["withdrawal_id"])
        return int(tx["id"])
