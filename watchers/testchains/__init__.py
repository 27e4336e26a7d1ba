"""Local test chains served on 127.0.0.1 for tests and `coffer up` in demo mode.

- Ethereum: `eth_chain.EthTestChain` (eth-tester / py-evm) served as JSON-RPC by `eth_rpc`;
  the test ERC-20 in `erc20` (source TestToken.sol, compiled bytecode and ABI beside it).
- Bitcoin: an Esplora-compatible regtest chain (`regtest_chain`, served by `esplora_regtest`)
  whose transactions are real, signed and verified.

Run one with `coffer chain eth|btc --port P`; tests use the fixtures in tests/chain_fixtures.py.
"""

from __future__ import annotations

from watchers.testchains.errors import ChainServerError, NotFoundError, RpcError, TxRejectedError

__all__ = ["ChainServerError", "NotFoundError", "RpcError", "TxRejectedError"]
