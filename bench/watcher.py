"""Benchmark of the watcher's hot path: scanning Bitcoin blocks of 4,000 outputs against 1,000,000 addresses.

`python -m bench.watcher [--blocks N] [--addresses N] [--outputs N]` builds, in memory,
a million registered regtest P2WPKH addresses (real bech32 encodings of random 20-byte
programs) and blocks whose txs are Esplora JSON text in pages of 25 txs, as an Esplora host
serves them (`/block/:hash/txs/:start`), with ~10% of outputs paying registered addresses.
Timed per block: `json.loads` of every page plus `watchers.scan.scan_esplora_txs` with an
owner lookup that does what `wallet.addressbook.AddressBook.owner` does (lower-case, dict
get). Not timed: HTTP, PostgreSQL.

Unless `--no-e2e`, it also starts the local regtest Esplora server (`coffer chain btc`),
mines one real block of signed P2WPKH txs with about `--outputs` outputs, and times the
watcher's `BtcSource` fetching and scanning it over HTTP (header, pages of 25 txs, scan),
reported as `e2e_*`. The last line is one JSON object of figures. The machine is shared
with other work while this runs, so figures are depressed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

from wallet.bech32 import encode_segwit
from watchers.model import BlockHeader
from watchers.scan import scan_esplora_txs

PAGE = 25


def make_addresses(count: int) -> list[str]:
    return [encode_segwit("bcrt", 0, os.urandom(20)) for _ in range(count)]


def esplora_tx(rng: random.Random, outputs: list[tuple[str, int]], block_hash: str, height: int) -> dict[str, Any]:
    txid = rng.randbytes(32).hex()
    return {
        "txid": txid, "version": 2, "locktime": 0, "size": 222, "weight": 561, "fee": 1410,
        "vin": [{"txid": rng.randbytes(32).hex(), "vout": 0, "prevout": None, "scriptsig": "", "scriptsig_asm": "",
                 "witness": [rng.randbytes(71).hex(), rng.randbytes(33).hex()], "is_coinbase": False,
                 "sequence": 4294967293}],
        "vout": [{"scriptpubkey": "0014" + rng.randbytes(20).hex(), "scriptpubkey_asm": "OP_0 OP_PUSHBYTES_20 ..",
                  "scriptpubkey_type": "v0_p2wpkh", "scriptpubkey_address": address, "value": value}
                 for address, value in outputs],
        "status": {"confirmed": True, "block_height": height, "block_hash": block_hash, "block_time": 1764115200},
    }


def make_block(rng: random.Random, height: int, registered: list[str], outputs: int,
               hit_ratio: float) -> tuple[BlockHeader, list[bytes], int]:
    block_hash = rng.randbytes(32).hex()
    header = BlockHeader(height, block_hash, rng.randbytes(32).hex())
    txs = []
    hits = 0
    for _ in range(outputs // 2):
        outs = []
        for _ in range(2):
            if rng.random() < hit_ratio:
                outs.append((rng.choice(registered), rng.randrange(10_000, 10**8)))
                hits += 1
            else:
                outs.append((encode_segwit("bcrt", 0, rng.randbytes(20)), rng.randrange(546, 10**8)))
        txs.append(esplora_tx(rng, outs, block_hash, height))
    pages = [json.dumps(txs[i:i + PAGE]).encode() for i in range(0, len(txs), PAGE)]
    return header, pages, hits


def _start_chain() -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "coffer", "chain", "btc", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("ready "):
        proc.kill()
        raise SystemExit(f"regtest chain did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def _signed_fanout(secret: bytes, utxo_txid: str, vout: int, value_sat: int, outputs: list[str]) -> str:
    """A P2WPKH spend of one UTXO into `outputs` equal outputs (BIP143 signature, embit)."""
    from embit import ec, script
    from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

    key = ec.PrivateKey(secret)
    fee_sat = 40 * len(outputs) + 200
    each = (value_sat - fee_sat) // len(outputs)
    tx = Transaction(vin=[TransactionInput(bytes.fromhex(utxo_txid), vout)],
                     vout=[TransactionOutput(each, script.address_to_scriptpubkey(a)) for a in outputs])
    digest = tx.sighash_segwit(0, script.p2pkh(key.get_public_key()), value_sat)
    signature = key.sign(digest).serialize() + bytes([SIGHASH.ALL])
    tx.vin[0].witness = script.Witness([signature, key.get_public_key().sec()])
    return str(tx.serialize().hex())


def end_to_end(registered: list[str], owner: Any, outputs: int, rounds: int) -> dict[str, Any]:
    import asyncio

    import httpx

    from wallet.addresses import p2wpkh_address
    from watchers.esplora import EsploraClient
    from watchers.model import AssetRule
    from watchers.sources import BtcSource

    proc, url = _start_chain()
    try:
        rng = random.Random(2)
        secret = rng.randbytes(32)
        from embit import ec

        my_address = p2wpkh_address(ec.PrivateKey(secret).get_public_key().sec(), "regtest")
        per_tx = 100
        funding = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for _ in range(max(1, outputs // per_tx)):
                paid = http.post("/regtest/faucet", json={"address": my_address, "amount_sat": 5_000_000})
                txid = paid.json()["txid"]
                vout = [o["scriptpubkey_address"] for o in http.get(f"/tx/{txid}").json()["vout"]].index(my_address)
                funding.append((txid, vout))
            http.post("/regtest/mine", json={"blocks": 1})
            for txid, vout in funding:
                outs = [rng.choice(registered) if rng.random() < 0.1 else encode_segwit("bcrt", 0, rng.randbytes(20))
                        for _ in range(per_tx)]
                answer = http.post("/tx", content=_signed_fanout(secret, txid, vout, 5_000_000, outs))
                if answer.status_code != 200:
                    raise SystemExit(f"regtest host refused the bench tx: {answer.text}")
            [block_hash] = http.post("/regtest/mine", json={"blocks": 1}).json()
            height = int(http.get("/blocks/tip/height").text)
            n_outputs = sum(len(t["vout"]) for t in _all_txs(http, block_hash))

        async def timed() -> list[float]:
            rule = AssetRule("BTC", 8, 8, None, 2, 10_000)
            source = BtcSource(EsploraClient(url), network="regtest", assets={"BTC": rule})
            times = []
            try:
                for _ in range(rounds):
                    start = time.perf_counter()
                    header = await source.header_at(height)
                    await source.scan(header, owner)
                    times.append(time.perf_counter() - start)
            finally:
                await source.aclose()
            return times

        times = asyncio.run(timed())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return {"e2e_block_hash": block_hash, "e2e_outputs_in_block": n_outputs, "e2e_txs_in_block": len(funding) + 1,
            "e2e_ms_per_block_median": round(statistics.median(times) * 1000, 2),
            "e2e_outputs_per_s": round(n_outputs / statistics.median(times)),
            "e2e_timed": "BtcSource.header_at + scan over HTTP to the local regtest Esplora server"}


def _all_txs(http: Any, block_hash: str) -> list[dict[str, Any]]:
    count = int(http.get(f"/block/{block_hash}").json()["tx_count"])
    txs: list[dict[str, Any]] = []
    for start in range(0, count, PAGE):
        txs.extend(http.get(f"/block/{block_hash}/txs/{start}").json())
    return txs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--addresses", type=int, default=1_000_000)
    parser.add_argument("--outputs", type=int, default=4_000)
    parser.add_argument("--hit-ratio", type=float, default=0.1)
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end run through the regtest server")
    args = parser.parse_args()
    from coffer.event_loop import install

    loop_name = install()  # as the coffer processes do (coffer/event_loop.py)
    rng = random.Random(1)
    t0 = time.perf_counter()
    registered = make_addresses(args.addresses)
    book = {a.lower(): i + 1 for i, a in enumerate(registered)}

    def owner(address: str) -> int | None:
        return book.get(address.lower())

    blocks = [make_block(rng, 100 + i, registered, args.outputs, args.hit_ratio) for i in range(args.blocks)]
    setup_s = time.perf_counter() - t0
    per_block_s: list[float] = []
    found_total = 0
    expected_total = 0
    for header, pages, hits in blocks:
        start = time.perf_counter()
        txs: list[dict[str, Any]] = []
        for page in pages:
            txs.extend(json.loads(page))
        found, _ = scan_esplora_txs(txs, header=header, network="regtest", asset="BTC", owner=owner)
        per_block_s.append(time.perf_counter() - start)
        found_total += len(found)
        expected_total += hits
    if found_total != expected_total:
        raise SystemExit(f"scan found {found_total} deposits, blocks held {expected_total}")
    total_s = sum(per_block_s)
    figures = {
        "bench": "watcher.scan_esplora_block",
        "registered_addresses": args.addresses,
        "outputs_per_block": args.outputs,
        "blocks": args.blocks,
        "deposits_found": found_total,
        "blocks_per_s": round(args.blocks / total_s, 2),
        "outputs_per_s": round(args.blocks * args.outputs / total_s),
        "ms_per_block_median": round(statistics.median(per_block_s) * 1000, 2),
        "ms_per_block_max": round(max(per_block_s) * 1000, 2),
        "target_ms_per_block": 200,
        "setup_s": round(setup_s, 1),
        "timed": "json.loads of 25-tx Esplora pages + scan_esplora_txs + owner lookups (no HTTP, no PostgreSQL)",
        "note": "2-core machine shared with other sessions: figures are depressed",
    }
    if not args.no_e2e:
        figures.update(end_to_end(registered, owner, args.outputs, rounds=5))
    print(json.dumps({**figures, "event_loop": loop_name}))


if __name__ == "__main__":
    main()
