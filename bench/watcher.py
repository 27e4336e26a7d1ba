"""Benchmark of the watcher's hot path: scanning Bitcoin blocks of 4,000 outputs against 1,000,000 addresses.

`python -m bench.watcher [--blocks N] [--addresses N] [--outputs N]` builds, in memory,
a million registered regtest P2WPKH addresses (real bech32 encodings of random 20-byte
programs) and blocks whose txs are Esplora JSON text in pages of 25 txs, as an Esplora host
serves them (`/block/:hash/txs/:start`), with ~10% of outputs paying registered addresses.
Timed per block: `json.loads` of every page plus `watchers.scan.scan_esplora_txs` with an
owner lookup that does what `wallet.addressbook.AddressBook.owner` does (lower-case, dict
get). Not timed: HTTP, PostgreSQL. The last line is one JSON object of figures.
The machine is shared with other work while this runs, so figures are depressed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--addresses", type=int, default=1_000_000)
    parser.add_argument("--outputs", type=int, default=4_000)
    parser.add_argument("--hit-ratio", type=float, default=0.1)
    args = parser.parse_args()
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
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
