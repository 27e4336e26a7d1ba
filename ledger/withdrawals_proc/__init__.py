"""The withdrawal processor: hot-signer policy, Bitcoin and Ethereum transaction building, signing,
persist-before-broadcast, confirmation and settlement, fee bumps and the cold path.

`processor.Processor` is the loop (`coffer withdrawals run`, and part of `coffer ledger run`);
`btc_build` and `eth_build` are pure builders; `repo` the PostgreSQL state (migration 0700);
`cold` the export/import of transactions signed offline with `coffer-signer`.
"""

from __future__ import annotations

from ledger.withdrawals_proc.errors import WithdrawalError

__all__ = ["WithdrawalError"]
