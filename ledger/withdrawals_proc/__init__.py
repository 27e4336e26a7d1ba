"""The withdrawal processor: hot-signer policy, Bitcoin and Ethereum transaction building, signing,
persist-before-broadcast, confirmation and settlement, fee bumps and the cold path.

`processor.Processor` is the loop (`coffer withdrawals run`, and part of `coffer ledger run` through
`service.run_from_env`); `btc_build` and `eth_build` are pure builders; `chains` the chain API calls;
`hotkeys` the hot wallet's public keys; `repo` the PostgreSQL state (migration 0700) and the nonce
manager; `confirm` settlement and re-broadcasts; `bump` fee bumps; `gaps` Ethereum nonce-gap fillers;
`sweep` sweeping and Bitcoin hot -> cold (offline-signed); `cold_sweep_eth` Ethereum/ERC-20 hot -> cold
(hot-signed under `COLD:<asset>` rules whose allow-list holds only the cold address); `cold` review,
approve/reject and the export/import of transactions signed offline with `coffer-signer`.
"""

from __future__ import annotations

from ledger.withdrawals_proc.errors import WithdrawalError

__all__ = ["WithdrawalError"]
