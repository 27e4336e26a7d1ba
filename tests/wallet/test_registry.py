"""wallet.registry directly on the real PostgreSQL fixture: rollback leaves no hole, `new`,
unknown users, case-insensitive uniqueness, owner look-up."""

from __future__ import annotations

import asyncpg
import pytest

from wallet import registry
from wallet.bip32 import ExtendedKey
from wallet.bip39 import mnemonic_to_seed
from wallet.config import parse_config
from wallet.errors import UnknownUserError, WalletError

SEED = mnemonic_to_seed("abandon " * 11 + "about")
CONFIG = parse_config({"assets": {
    "BTC": {"chain": "btc", "network": "testnet",
            "xpub": ExtendedKey.from_seed(SEED, "testnet").derive("m/84'/1'/3'").neuter().serialize()},
    "ETH": {"chain": "eth", "network": "testnet",
            "xpub": ExtendedKey.from_seed(SEED, "mainnet").derive("m/44'/60'/3'").neuter().serialize()},
}})
BTC = CONFIG.asset("BTC")
ETH = CONFIG.asset("ETH")


@pytest.mark.asyncio
async def test_rollback_leaves_no_hole_and_new_rotates(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("INSERT INTO users (id) VALUES (1), (2) ON CONFLICT DO NOTHING")
        tx = conn.transaction()
        await tx.start()
        rolled, created = await registry.allocate(conn, BTC, 1)
        assert created and rolled.index == 0
        await tx.rollback()
        async with conn.transaction():
            first, created = await registry.allocate(conn, BTC, 1)
        assert created and first.index == 0 and first.address == rolled.address
        async with conn.transaction():
            same, created = await registry.allocate(conn, BTC, 1)
        assert not created and same == first
        async with conn.transaction():
            other, _ = await registry.allocate(conn, BTC, 2)
            rotated, created = await registry.allocate(conn, BTC, 1, new=True)
        assert (other.index, rotated.index, created) == (1, 2, True)
        assert rotated.derivation_path == "m/84'/1'/3'/0/2"
        current = await registry.current_address(conn, BTC, 1)
        assert current is not None and current.address == rotated.address
        listed = await registry.list_for_user(conn, 1)
        assert [(r.index, r.is_current) for r in listed] == [(2, True), (0, False)]
        assert await registry.max_index_hole(conn, BTC.account) == 0
        owner = await registry.find_owner(conn, first.address.upper())
        assert owner is not None and owner.user_id == 1
        assert await registry.find_owner(conn, "tb1qnotours") is None
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_errors(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        with pytest.raises(WalletError, match="inside a transaction"):
            await registry.allocate(conn, BTC, 1)
        with pytest.raises(UnknownUserError, match="user 424242 does not exist"):
            async with conn.transaction():
                await registry.allocate(conn, BTC, 424242)
        await conn.execute("INSERT INTO users (id) VALUES (3) ON CONFLICT DO NOTHING")
        async with conn.transaction():
            eth, _ = await registry.allocate(conn, ETH, 3)
        # The same address in another letter case is refused by the database itself.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                """INSERT INTO deposit_addresses (user_id, asset, chain, network, address, derivation_path,
                   address_index, is_current) VALUES (3, 'ETH', 'eth', 'testnet', $1, 'x', 99, false)""",
                eth.address.lower(),
            )
        # A counter pushed past the gap limit is refused rather than leaving a large hole.
        await conn.execute("UPDATE wallet_accounts SET next_index = next_index + 50 WHERE account = $1", ETH.account)
        await conn.execute("INSERT INTO users (id) VALUES (4) ON CONFLICT DO NOTHING")
        with pytest.raises(WalletError, match="gap limit"):
            async with conn.transaction():
                await registry.allocate(conn, ETH, 4, gap_limit=20)
    finally:
        await conn.close()
