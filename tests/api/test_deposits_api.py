"""Deposit-address API against the real PostgreSQL fixture: auth, idempotency, concurrency,
bad input, owner look-up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from api.deposits_app import DepositApiConfig, create_app
from coffer.settings import Secret
from wallet.addressbook import AddressBook
from wallet.addresses import validate_address
from wallet.bip32 import ExtendedKey
from wallet.bip39 import mnemonic_to_seed
from wallet.config import parse_config
from wallet.registry import max_index_hole

TOKEN = "test-service-token-0123456789"
SEED = mnemonic_to_seed("abandon " * 11 + "about")
ROOT = ExtendedKey.from_seed(SEED, "testnet")
VPUB = ROOT.derive("m/84'/1'/0'").neuter().with_version("vpub").serialize()
TPUB86 = ROOT.derive("m/86'/1'/0'").neuter().serialize()
TPUB_CONC = ROOT.derive("m/84'/1'/7'").neuter().serialize()
ETH_XPUB = ExtendedKey.from_seed(SEED, "mainnet").derive("m/44'/60'/0'").neuter().serialize()
USDT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
WALLET = parse_config({
    "gap_limit": 20,
    "assets": {
        "BTC": {"chain": "btc", "network": "regtest", "xpub": VPUB},
        "BTCTR": {"chain": "btc", "network": "regtest", "xpub": TPUB86, "type": "p2tr"},
        "BTCC": {"chain": "btc", "network": "regtest", "xpub": TPUB_CONC, "type": "p2wpkh"},
        "ETH": {"chain": "eth", "network": "regtest", "xpub": ETH_XPUB},
        "USDT": {"chain": "eth", "network": "regtest", "xpub": ETH_XPUB, "token": USDT},
    },
})
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest_asyncio.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("INSERT INTO users (id) SELECT g FROM generate_series(1, 300) g ON CONFLICT DO NOTHING")
    finally:
        await conn.close()
    app = create_app(DepositApiConfig(db_url, Secret(TOKEN), WALLET))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://deposits") as http:
            yield http


async def post(client: httpx.AsyncClient, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post("/v1/deposit-addresses", json=body, headers=AUTH if headers is None else headers)


@pytest.mark.asyncio
async def test_auth_required(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
        response = await post(client, {"user_id": 1, "asset": "BTC"}, headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
        assert TOKEN not in response.text
    assert (await client.get("/v1/deposit-addresses?user_id=1")).status_code == 401
    assert (await client.get("/v1/deposit-addresses/bcrt1qxyz")).status_code == 401
    assert (await post(client, {"user_id": 1, "asset": "BTC"}, {"Authorization": f"bearer {TOKEN}"})).status_code in (
        200, 201,
    )


@pytest.mark.asyncio
async def test_empty_server_token_refuses_everything(db_url: str) -> None:
    app = create_app(DepositApiConfig(db_url, Secret(""), WALLET))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://d") as http:
        for token in ("", " ", TOKEN):
            r = await http.post("/v1/deposit-addresses", json={"user_id": 1, "asset": "BTC"},
                                headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401


@pytest.mark.asyncio
async def test_idempotent_then_new(client: httpx.AsyncClient) -> None:
    first = await post(client, {"user_id": 10, "asset": "BTC"})
    assert first.status_code == 201
    body = first.json()
    assert set(body) >= {"address", "asset", "chain", "network", "derivation_path", "index"}
    assert (body["asset"], body["chain"], body["network"]) == ("BTC", "btc", "regtest")
    assert body["derivation_path"] == f"m/84'/1'/0'/0/{body['index']}"
    assert validate_address(body["address"], "btc", "regtest") == body["address"]
    assert body["address"] == WALLET.asset("BTC").deriver.address(body["index"])
    again = await post(client, {"user_id": 10, "asset": "BTC"})
    assert again.status_code == 200 and again.json() == body
    fresh = await post(client, {"user_id": 10, "asset": "BTC", "new": True})
    assert fresh.status_code == 201
    assert fresh.json()["address"] != body["address"] and fresh.json()["index"] > body["index"]
    current = await post(client, {"user_id": 10, "asset": "BTC"})
    assert current.status_code == 200 and current.json()["address"] == fresh.json()["address"]
    listed = await client.get("/v1/deposit-addresses", params={"user_id": 10}, headers=AUTH)
    assert listed.status_code == 200
    rows = listed.json()["addresses"]
    assert [r["address"] for r in rows] == [fresh.json()["address"], body["address"]]
    assert rows[1]["is_current"] is False
    assert rows[0]["assets"] == ["BTC"]
    taproot = await post(client, {"user_id": 10, "asset": "BTCTR"})
    assert taproot.status_code == 201 and taproot.json()["address"].startswith("bcrt1p")


@pytest.mark.asyncio
async def test_eth_and_token_share_one_address(client: httpx.AsyncClient) -> None:
    eth = await post(client, {"user_id": 20, "asset": "ETH"})
    assert eth.status_code == 201
    usdt = await post(client, {"user_id": 20, "asset": "USDT"})
    assert usdt.status_code == 200
    assert usdt.json()["address"] == eth.json()["address"] and usdt.json()["asset"] == "USDT"
    address = eth.json()["address"]
    assert validate_address(address.lower(), "eth", "regtest") == address  # stored EIP-55
    owner = await client.get(f"/v1/deposit-addresses/{address.lower()}", headers=AUTH)
    assert owner.status_code == 200
    assert owner.json()["user_id"] == 20 and owner.json()["assets"] == ["ETH", "USDT"]
    listed = await client.get("/v1/deposit-addresses?user_id=20", headers=AUTH)
    assert [(r["address"], r["assets"]) for r in listed.json()["addresses"]] == [(address, ["ETH", "USDT"])]
    missing = await client.get("/v1/deposit-addresses/0x000000000000000000000000000000000000dEaD", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"user_id": 1, "asset": "DOGE"}, "unknown_asset", "asset"),
        ({"user_id": 999_999, "asset": "BTC"}, "unknown_user", "user_id"),
        ({"user_id": 0, "asset": "BTC"}, "invalid_request", "user_id"),
        ({"user_id": -5, "asset": "BTC"}, "invalid_request", "user_id"),
        ({"user_id": "12", "asset": "BTC"}, "invalid_request", "user_id"),
        ({"user_id": True, "asset": "BTC"}, "invalid_request", "user_id"),
        ({"user_id": 1.5, "asset": "BTC"}, "invalid_request", "user_id"),
        ({"user_id": 2**63, "asset": "BTC"}, "invalid_request", "user_id"),
        ({"asset": "BTC"}, "invalid_request", "user_id"),
        ({"user_id": 1}, "invalid_request", "asset"),
        ({"user_id": 1, "asset": "BTC", "new": "yes"}, "invalid_request", "new"),
        ({"user_id": 1, "asset": "BTC", "colour": "red"}, "invalid_request", "colour"),
        ([1, 2], "invalid_request", None),
    ],
)
async def test_bad_input_is_422_with_reason(client: httpx.AsyncClient, body: Any, code: str, field: str) -> None:
    response = await post(client, body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["error"] == code and problem["field"] == field
    assert isinstance(problem["reason"], str) and len(problem["reason"]) > 5


@pytest.mark.asyncio
async def test_bad_query_and_body(client: httpx.AsyncClient) -> None:
    for query in ("", "?user_id=", "?user_id=abc", "?user_id=0", "?user_id=99999999999999999999"):
        r = await client.get(f"/v1/deposit-addresses{query}", headers=AUTH)
        assert r.status_code == 422 and r.json()["field"] == "user_id", query
    r = await client.get("/v1/deposit-addresses?user_id=123456", headers=AUTH)
    assert r.status_code == 422 and r.json()["error"] == "unknown_user"
    r = await client.post("/v1/deposit-addresses", content=b"{not json", headers=AUTH)
    assert r.status_code == 422 and "JSON" in r.json()["reason"]


@pytest.mark.asyncio
async def test_concurrent_allocation_distinct_and_gap_free(client: httpx.AsyncClient, db_url: str) -> None:
    users = list(range(100, 200))
    # 100 users at once, and each user's request doubled: duplicates must collapse.
    responses = await asyncio.gather(
        *(post(client, {"user_id": u, "asset": "BTCC"}) for u in users + users)
    )
    assert all(r.status_code in (200, 201) for r in responses)
    assert sum(r.status_code == 201 for r in responses) == 100
    by_user: dict[int, set[str]] = {}
    for r in responses:
        by_user.setdefault(r.json()["user_id"], set()).add(r.json()["address"])
    assert all(len(addresses) == 1 for addresses in by_user.values())
    indices = sorted({r.json()["index"] for r in responses})
    assert indices == list(range(100))  # distinct, none reused, no holes
    addresses = {a for s in by_user.values() for a in s}
    assert len(addresses) == 100
    conn = await asyncpg.connect(db_url)
    try:
        assert await max_index_hole(conn, WALLET.asset("BTCC").account) == 0
        assert await conn.fetchval(
            "SELECT next_index FROM wallet_accounts WHERE account = $1", WALLET.asset("BTCC").account
        ) == 100
        book = AddressBook("btc", "regtest")
        await book.refresh(conn)
        for user, addrs in by_user.items():
            assert book.owner(next(iter(addrs))) == user
    finally:
        await conn.close()
