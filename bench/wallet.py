"""Benchmark: deposit-address derivation from an account xpub, single process.

`python -m bench.wallet [--count N]` derives N consecutive receive addresses (CKDpub with
the cached account/0 node: one HMAC-SHA512 + one coincurve public-key tweak-add each, then
the encoding) for P2WPKH (the headline `addresses_per_s`), P2TR (BIP86 tweak on top) and
Ethereum (uncompressed key + Keccak-256 + EIP-55). Each figure is the best of 3 runs;
`p2wpkh_per_cpu_s` divides by this process's CPU time, which shows what one uncontended
core gives when the machine is shared (wall-clock figures drop with the load).
Last line: one JSON object. Figures depend on machine load; state it when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from wallet.bip32 import ExtendedKey
from wallet.bip39 import mnemonic_to_seed
from wallet.derive import AccountDeriver, open_account


def _rate(deriver: AccountDeriver, count: int, repeats: int = 3) -> tuple[float, float]:
    """(best wall-clock rate, best rate per CPU second of this process) over `repeats` runs."""
    best = best_cpu = 0.0
    for run in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = deriver.addresses(run * count, count)
        elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        assert len(out) == count and len(set(out)) == count
        best = max(best, count / elapsed)
        best_cpu = max(best_cpu, count / max(elapsed_cpu, 1e-9))
    return best, best_cpu


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wallet")
    parser.add_argument("--count", type=int, default=20_000, help="addresses per run (default 20000)")
    args = parser.parse_args()
    seed = mnemonic_to_seed("abandon " * 11 + "about")
    root = ExtendedKey.from_seed(seed, "mainnet")
    p2wpkh = open_account(root.derive("m/84'/0'/0'").neuter().serialize(), "btc", "mainnet", "p2wpkh")
    p2tr = open_account(root.derive("m/86'/0'/0'").neuter().serialize(), "btc", "mainnet", "p2tr")
    eth = open_account(root.derive("m/44'/60'/0'").neuter().serialize(), "eth", "mainnet")
    p2wpkh_rate, p2wpkh_cpu_rate = _rate(p2wpkh, args.count)
    p2tr_rate, _ = _rate(p2tr, args.count)
    eth_rate, _ = _rate(eth, args.count)
    print(f"p2wpkh {p2wpkh_rate:,.0f}/s  p2tr {p2tr_rate:,.0f}/s  eth {eth_rate:,.0f}/s")
    print(f"({args.count} addresses per run, best of 3 runs, one process)")
    print(json.dumps({
        "benchmark": "wallet.derive_from_account_xpub",
        "addresses_per_s": round(p2wpkh_rate),
        "p2wpkh_per_s": round(p2wpkh_rate),
        "p2wpkh_per_cpu_s": round(p2wpkh_cpu_rate),
        "p2tr_per_s": round(p2tr_rate),
        "eth_per_s": round(eth_rate),
        "count_per_run": args.count,
        "target_addresses_per_s": 20_000,
        "processes": 1,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "note": "single process on a shared 2-core machine; other sessions were running",
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
