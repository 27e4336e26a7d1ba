"""`coffer withdrawals ...`: the operator's view of withdrawals and the processor.

  list [--all]              withdrawals not finished (all with --all): stage, amount, address
  show ID                   one withdrawal and every transaction built for it
  approve ID                a withdrawal in review goes the cold path: draft built and exported
  reject ID --reason TEXT   refuse a withdrawal not yet signed: the hold is released
  export [--dir DIR]        (re)write every unsigned draft to the export folder
  import --signed FILE      store a transaction signed offline with coffer-signer (then broadcast)
  bump ID                   fee-bump the unconfirmed transaction of withdrawal ID (RBF / same nonce)
  bump --tx TX              fee-bump transaction TX (a withdrawal's or an internal one: gas top-up,
                            sweep, hot -> cold, nonce-gap filler)
  bump --stuck [--older-than S]  fee-bump every broadcast transaction first sent over S s ago
                            (default 0); those signed offline are listed and left to the operator
  run [--once]              the processor loop (until SIGTERM/SIGINT), or one pass

Configuration: COFFER_DATABASE_URL (Settings); the hot signer's variables (signer.hot_config) for
approve, bump and run; COFFER_WITHDRAWALS_ESPLORA_URL / COFFER_WITHDRAWALS_ETH_RPC_URL (or the
watchers' URLs) and COFFER_WITHDRAWALS_EXPORT_DIR, COFFER_WITHDRAWALS_BUMP_AFTER_S,
COFFER_WITHDRAWALS_FEE_FLOOR_SAT_VB, COFFER_WITHDRAWALS_FEE_TARGET_BLOCKS, COFFER_WITHDRAWALS_POLL_S.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from coffer.settings import Settings
from ledger.withdrawals_proc.errors import ProcessorConfigError, UnknownWithdrawalError, WithdrawalError


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("withdrawals", help="withdrawals: review, cold path, processor")
    cmds = parser.add_subparsers(dest="withdrawals_command", metavar="CMD")
    cmds.required = True
    p = cmds.add_parser("list", help="withdrawals not yet finished")
    p.add_argument("--all", action="store_true", help="include settled and released ones")
    p.set_defaults(func=_list)
    p = cmds.add_parser("show", help="one withdrawal and its transactions")
    p.add_argument("id", type=int)
    p.set_defaults(func=_show)
    p = cmds.add_parser("approve", help="send a withdrawal in review down the cold path (export for offline signing)")
    p.add_argument("id", type=int)
    p.set_defaults(func=_approve)
    p = cmds.add_parser("reject", help="refuse a withdrawal not yet signed; its hold is released")
    p.add_argument("id", type=int)
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_reject)
    p = cmds.add_parser("export", help="write every unsigned draft to the export folder")
    p.add_argument("--dir", default=None, help="folder (default COFFER_WITHDRAWALS_EXPORT_DIR)")
    p.set_defaults(func=_export)
    p = cmds.add_parser("import", help="store a transaction signed offline with coffer-signer")
    p.add_argument("--signed", required=True, help="signed PSBT (base64) or 0x raw Ethereum transaction file")
    p.set_defaults(func=_import)
    p = cmds.add_parser("bump", help="fee-bump the unconfirmed transaction of a withdrawal, a transaction, or "
                        "every stuck one")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", help="withdrawal id")
    which.add_argument("--tx", type=int, help="transaction id (withdrawal or internal: gas, sweep, cold)")
    which.add_argument("--stuck", action="store_true", help="every broadcast transaction older than --older-than")
    p.add_argument("--older-than", type=float, default=0.0, metavar="S", help="with --stuck: first sent over S s ago")
    p.set_defaults(func=_bump)
    p = cmds.add_parser("run", help="run the withdrawal processor until SIGTERM/SIGINT")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.set_defaults(func=_run)


def _db_url() -> str:
    url = Settings.from_env().database_url.get()
    if not url:
        raise ProcessorConfigError("no database: set COFFER_DATABASE_URL")
    return str(url)


def _with_pool(fn: Callable[[Any], Awaitable[int]]) -> int:
    async def main() -> int:
        import asyncpg

        pool = await asyncpg.create_pool(_db_url(), min_size=1, max_size=4)
        try:
            return await fn(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def _with_processor(fn: Callable[[Any], Awaitable[int]]) -> int:
    from contextlib import AsyncExitStack

    from ledger.withdrawals_proc.service import open_processor

    async def inner(pool: Any) -> int:
        async with AsyncExitStack() as stack:
            return await fn(await open_processor(pool, stack))

    return _with_pool(inner)


def _list(args: argparse.Namespace) -> int:
    async def go(pool: Any) -> int:
        where = "" if args.all else "WHERE w.state NOT IN ('settled', 'released')"
        rows = await pool.fetch(
            "SELECT w.id, w.user_id, w.asset, w.amount, w.fee, w.address, w.state, coalesce(p.stage, 'new') AS stage, "
            f"p.reason FROM withdrawals w LEFT JOIN wd_proc p ON p.withdrawal_id = w.id {where} ORDER BY w.id")
        print(f"{'id':>6} {'user':>8} {'asset':<5} {'amount':>14} {'fee':>10} {'state':<9} {'stage':<9} address")
        for w in rows:
            print(f"{w['id']:>6} {w['user_id']:>8} {w['asset']:<5} {w['amount']:>14} {w['fee']:>10} {w['state']:<9} "
                  f"{w['stage']:<9} {w['address']}" + (f"  ({w['reason']})" if w["reason"] else ""))
        print(f"{len(rows)} withdrawal(s)")
        return 0

    return _with_pool(go)


def _show(args: argparse.Namespace) -> int:
    async def go(pool: Any) -> int:
        w = await pool.fetchrow(
            "SELECT w.*, p.stage, p.path, p.reason AS proc_reason FROM withdrawals w "
            "LEFT JOIN wd_proc p ON p.withdrawal_id = w.id WHERE w.id = $1", args.id)
        if w is None:
            raise UnknownWithdrawalError(f"no withdrawal {args.id}")
        print(f"withdrawal {w['id']}: user {w['user_id']}, {w['amount']} {w['asset']} units (fee {w['fee']}) "
              f"to {w['address']}")
        print(f"  ledger state {w['state']}, stage {w['stage'] or 'new'}, path {w['path'] or '-'}"
              + (f", reason: {w['proc_reason']}" if w["proc_reason"] else ""))
        txs = await pool.fetch("SELECT * FROM wd_txs WHERE withdrawal_id = $1 ORDER BY id", args.id)
        for t in txs:
            nonce = f" nonce {t['nonce']}" if t["nonce"] is not None else ""
            print(f"  tx {t['id']} gen {t['generation']} {t['state']}: {t['txid'] or '(unsigned)'}{nonce}, "
                  f"{t['amount_chain']} to {t['destination']}, fee {t['fee_chain']}, broadcasts {t['broadcasts']}"
                  + (f", confirmed at {t['confirmed_height']}" if t["confirmed_height"] else "")
                  + (f" ({t['reason']})" if t["reason"] else ""))
        return 0

    return _with_pool(go)


def _approve(args: argparse.Namespace) -> int:
    from ledger.withdrawals_proc.cold import approve

    async def go(proc: Any) -> int:
        tx_id, path = await approve(proc, args.id)
        print(f"withdrawal {args.id}: draft transaction {tx_id} built for offline signing"
              + (f"; written to {path}" if path else "; set COFFER_WITHDRAWALS_EXPORT_DIR or run export --dir"))
        return 0

    return _with_processor(go)


def _reject(args: argparse.Namespace) -> int:
    from ledger.withdrawals_proc.cold import reject

    async def go(pool: Any) -> int:
        await reject(pool, args.id, args.reason)
        print(f"withdrawal {args.id} rejected; its hold is released")
        return 0

    return _with_pool(go)


def _export(args: argparse.Namespace) -> int:
    from ledger.withdrawals_proc.cold import export_all

    folder = args.dir or os.environ.get("COFFER_WITHDRAWALS_EXPORT_DIR", "")
    if not folder:
        raise ProcessorConfigError("no export folder: pass --dir or set COFFER_WITHDRAWALS_EXPORT_DIR")

    async def go(pool: Any) -> int:
        paths = await export_all(pool, Path(folder))
        for path in paths:
            print(path)
        print(f"{len(paths)} unsigned transaction(s) exported")
        return 0

    return _with_pool(go)


def _import(args: argparse.Namespace) -> int:
    from ledger.withdrawals_proc.cold import import_signed

    try:
        text = Path(args.signed).read_text(encoding="utf-8")
    except OSError as exc:
        raise WithdrawalError(f"cannot read --signed {args.signed}: {exc.strerror}") from None

    async def go(pool: Any) -> int:
        tx_id = await import_signed(pool, text)
        print(f"signed transaction {tx_id} stored; the processor broadcasts it")
        return 0

    return _with_pool(go)


def _bump(args: argparse.Namespace) -> int:
    from ledger.withdrawals_proc import bump

    async def one(proc: Any, tx_id: int) -> None:
        new_id = await proc.bump(tx_id)
        new = await proc.pool.fetchrow("SELECT txid, fee_chain, state FROM wd_txs WHERE id = $1", new_id)
        print(f"transaction {tx_id} replaced by {new_id} ({new['txid']}, fee {new['fee_chain']}, {new['state']})")

    async def go(proc: Any) -> int:
        if args.stuck:
            failed = 0
            rows = await bump.stuck(proc, args.older_than)
            for tx in rows:
                if not await bump.hot_signed(proc.pool, tx):
                    print(f"NOT BUMPED: {bump.offline_message(tx)}")
                    continue
                if await bump.mined_already(proc, tx):
                    print(f"{bump.describe(tx)} is already in a block: nothing to bump")
                    continue
                try:
                    await one(proc, int(tx["id"]))
                except WithdrawalError as exc:
                    failed += 1
                    print(f"NOT BUMPED: {bump.describe(tx)}: {exc}")
            print(f"{len(rows)} stuck transaction(s), {failed} bump(s) failed")
            return 1 if failed else 0
        if args.tx is not None:
            tx_id = args.tx
        else:
            row = await proc.pool.fetchrow(
                "SELECT id FROM wd_txs WHERE withdrawal_id = $1 AND state = 'broadcast' ORDER BY generation DESC "
                "LIMIT 1", args.id)
            if row is None:
                raise WithdrawalError(f"withdrawal {args.id} has no broadcast transaction to bump")
            tx_id = int(row["id"])
        try:
            await one(proc, tx_id)
        except bump.OfflineSignedError as exc:
            print(f"NOT BUMPED: {exc}")
            return 1
        return 0

    return _with_processor(go)


def _run(args: argparse.Namespace) -> int:
    import signal

    from ledger.withdrawals_proc.service import READY_LINE

    async def go(proc: Any) -> int:
        if args.once:
            moved = await proc.step()
            print(f"withdrawals: one pass, {moved} step(s)")
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(READY_LINE, flush=True)
        await proc.run(stop)
        print("withdrawals: stopped", flush=True)
        return 0

    return _with_processor(go)
