"""Withdrawal transaction building and signing throughput, in-process (no database, no chain).

Bitcoin: coin selection over 50 coins + PSBT assembly (with previous transactions), then what the
hot signer does to it (`analyze`: re-derive inputs and change, fee caps; `sign_checked`; finalize).
Ethereum: EIP-1559 transfer JSON, parse, sign (RFC6979 via coincurve). The database part of the
hot path (policy decision row, persist) and the chain API round trips are not included; they
dominate in practice. Prints one JSON object on its last line.

    python -m bench.withdrawals [--count N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from typing import Any


def _btc_round(keys: Any, root: Any, coins: list[Any], n: int) -> float:
    from embit.finalizer import finalize_psbt

    from ledger.withdrawals_proc import btc_build
    from signer.psbt_sign import analyze, parse_psbt, sign_checked

    change = btc_build.ChangeTarget(*keys.btc_change(0))
    start = time.perf_counter()
    for i in range(n):
        chosen, fee, change_sat = btc_build.select_coins(coins, 150_000 + i, 22, 22, 3_000)
        built = btc_build.build_psbt(chosen, destination="bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
                                     amount_sat=150_000 + i, fee_sat=fee, change_sat=change_sat, change=change,
                                     fingerprint=keys.fingerprint)
        psbt, _ = parse_psbt(built.psbt_b64.encode())
        summary = analyze(psbt, root, keys.fingerprint, "regtest")
        sign_checked(psbt, root, summary)
        assert finalize_psbt(psbt) is not None
    return time.perf_counter() - start


def _eth_round(keys: Any, eth_root: Any, n: int) -> float:
    from ledger.withdrawals_proc import eth_build
    from signer.eth_sign import derive_eth_key, parse_eth_tx, sign_eth_tx

    key = derive_eth_key(eth_root, keys.eth_hot_path)
    fees = eth_build.Fees(30 * 10**9, 10**9)
    start = time.perf_counter()
    for i in range(n):
        tx = eth_build.transfer_tx(chain_id=1, nonce=i, destination="0x" + "35" * 20, amount=10**15 + i, fees=fees,
                                   derivation_path=keys.eth_hot_path, token_contract=None)
        sign_eth_tx(parse_eth_tx(eth_build.dumps(tx)), key)
    return time.perf_counter() - start


def main() -> int:
    from embit import script
    from embit.ec import PublicKey
    from embit.script import Script
    from embit.transaction import Transaction, TransactionInput, TransactionOutput

    from ledger.withdrawals_proc import btc_build
    from ledger.withdrawals_proc.hotkeys import HotKeys
    from signer.hd import root_key
    from signer.hot import HotSigner
    from signer.keystore import UnlockedSeed
    from signer.policy import Policy

    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    seed = UnlockedSeed("abandon " * 11 + "about")
    signer = HotSigner(seed, Policy([]), network="regtest")
    keys = HotKeys.from_signer(signer)
    root = root_key(seed, "regtest")
    coins = []
    for i in range(50):
        path = f"m/84'/1'/0'/0/{i}"
        pub = keys.btc_pubkey(path)
        assert pub is not None
        prev_in = TransactionInput(hashlib.sha256(bytes([i])).digest(), 0, script_sig=Script(b""))
        prev = Transaction(vin=[prev_in], vout=[TransactionOutput(100_000 + 1_000 * i,
                                                                  script.p2wpkh(PublicKey.parse(pub)))])
        coins.append(btc_build.Coin(bytes(prev.txid()).hex(), 0, 100_000 + 1_000 * i, path, pub,
                                    bytes(prev.serialize()).hex()))
    eth_root = root_key(seed, "mainnet")
    cpu0 = time.process_time()
    btc_s = min(_btc_round(keys, root, coins, args.count) for _ in range(3))
    eth_s = min(_eth_round(keys, eth_root, args.count) for _ in range(3))
    cpu = time.process_time() - cpu0
    btc_rate, eth_rate = args.count / btc_s, args.count / eth_s
    print(f"btc build+check+sign {btc_rate:,.0f}/s  eth build+sign {eth_rate:,.0f}/s (best of 3, one process)")
    print(json.dumps({
        "benchmark": "withdrawals.build_and_sign",
        "btc_psbt_build_sign_per_s": round(btc_rate),
        "eth_tx_build_sign_per_s": round(eth_rate),
        "count_per_run": args.count,
        "cpu_s_total": round(cpu, 2),
        "processes": 1,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "note": "in-process, no database or chain round trips; shared 2-core machine, other sessions running",
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
