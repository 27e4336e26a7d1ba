"""Pytest fixtures for the local test chains (Ethereum JSON-RPC on eth-tester, Esplora-compatible
Bitcoin regtest). Registered from tests/conftest.py via `pytest_plugins`; owned by the watchers
test-chain work."""
