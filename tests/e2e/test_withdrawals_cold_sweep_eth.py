"""Hot ETH and USDT above their caps move to the cold address on the local EVM chain, hot-signed under
the allow-listed policy assets COLD:ETH / COLD:USDT. The cold keystore is made with `coffer-signer
init` and its Ethereum account xpub printed by `coffer-signer xpub`; the cold address is its
`.../0/0`. A processor configured with another xpub (a compromised configuration) is refused by the
policy: nothing moves and the nonce is given back. Then, with the right xpub, while two user
withdrawals are still unmined, the excess above each cap goes to cold down to half the cap, keeping
what the pending withdrawals spend; amounts exact, nonces contiguous, the ledger untouched by the
moves and its audit clean, hot + cold on chain = what came in - what was withdrawn - gas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger.withdrawals_proc.chains import EthApi
from ledger.withdrawals_proc.processor import Processor, ProcessorConfig
from ledger.withdrawals_proc.sweep import SweepConfig
from signer import keystore
from signer.hot import HotSigner
from signer.policy import Policy
from tests.signer.helpers import PASSPHRASE
from tests.withdrawals import env as E
from tests.withdrawals.cli import run_cli

DEST = "0x4545454545454545454545454545454545454545"
CAP_ETH = 2 * 10**18
CAP_USDT = 1000 * 10**6
SIGNER_ENV = {"COFFER_SIGNER_PASSPHRASE": PASSPHRASE}


def cold_keystore(path: Path) -> tuple[str, str]:
    """`coffer-signer init` a cold keystore; (its Ethereum account xpub, the address of .../0/0 of its seed)."""
    from signer.eth_sign import address_of, derive_eth_key
    from signer.hd import root_key

    init = run_cli(["init", "--keystore", str(path), "--words", "12", "--scrypt-n", "1024"], SIGNER_ENV,
                   module="signer.cold_cli")
    assert init.returncode == 0, init.stderr
    out = run_cli(["xpub", "--keystore", str(path), "--chain", "eth", "--network", "regtest"], SIGNER_ENV,
                  module="signer.cold_cli")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    account = next(x.split(":", 1)[1].strip() for x in lines if x.startswith("path:"))
    # the address the cold seed itself controls (derived from the private key, not from the xpub)
    seed = keystore.load(path, PASSPHRASE)
    return lines[0].strip(), address_of(derive_eth_key(root_key(seed, "mainnet"), f"{account}/0/0"))


@pytest.mark.asyncio
async def test_hot_eth_and_usdt_above_caps_move_to_cold(db_url: str, redis_url: str, eth_chain: Any,
                                                        tmp_path: Path) -> None:
    token = eth_chain.deploy_erc20()
    chain_id = int(eth_chain.rpc("eth_chainId"), 16)
    cold_xpub, cold = cold_keystore(tmp_path / "cold.json")
    rogue_xpub, rogue = cold_keystore(tmp_path / "rogue.json")
    env = E.make_env(tmp_path, usdt_contract=token, eth_chain_id=chain_id)
    policy = Policy.from_config({"rules": [*E.POLICY["rules"],
                                           {"name": "cold-eth", "asset": "COLD:ETH", "allowed_destinations": [cold]},
                                           {"name": "cold-usdt", "asset": "COLD:USDT",
                                            "allowed_destinations": [cold]}]})
    signer = HotSigner(keystore.load(env.keystore, PASSPHRASE), policy, network=E.NETWORK, eth_chain_id=chain_id)
    caps = {"COFFER_WITHDRAWALS_HOT_CAP_ETH_WEI": str(CAP_ETH), "COFFER_WITHDRAWALS_HOT_CAP_USDT": str(CAP_USDT)}
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    eth = EthApi(eth_chain.url)
    try:
        await E.seed_assets(conn, usdt_contract=token)
        rogue_proc = Processor(pool, signer, ProcessorConfig(), btc=None, eth=eth, sweep=SweepConfig.from_env(
            {**caps, "COFFER_WITHDRAWALS_COLD_ETH_XPUB": rogue_xpub}))
        proc = Processor(pool, signer, ProcessorConfig(), btc=None, eth=eth, sweep=SweepConfig.from_env(
            {**caps, "COFFER_WITHDRAWALS_COLD_ETH_XPUB": cold_xpub}))
        assert proc.sweeper is not None and proc.sweeper.cold_eth is not None
        assert proc.sweeper.cold_eth.cold_address == cold  # .../0/0 of the xpub = the cold seed's own key
        hot = proc.keys.eth_hot_address
        fund = eth_chain.fund(hot, 5 * 10**18)
        mint = eth_chain.mint_erc20(token, hot, 3000 * 10**6)
        await conn.execute("INSERT INTO users (id) VALUES (21)")
        await E.credit(conn, user_id=21, asset="ETH", amount=5 * 10**9, txid=fund)
        await E.credit(conn, user_id=21, asset="USDT", amount=3000 * 10**6, txid=mint)
        start_nonce = await eth.nonce(hot, "pending")
        eth_before, usdt_before = await eth.balance_wei(hot), await eth.token_balance(token, hot)

        # 1. a configuration pointing elsewhere: the hot policy refuses, nothing moves, nonce given back
        assert await rogue_proc.step() == 0
        refused = await conn.fetch("SELECT * FROM wd_txs ORDER BY id")
        assert [(t["purpose"], t["asset"], t["state"], t["destination"]) for t in refused] == [
            ("cold", "USDT", "abandoned", rogue), ("cold", "ETH", "abandoned", rogue)]
        assert all("is not on the allow-list" in t["reason"] for t in refused), [t["reason"] for t in refused]
        assert await eth.nonce(hot, "pending") == start_nonce
        assert (await eth.balance_wei(hot), await eth.token_balance(token, hot)) == (eth_before, usdt_before)
        assert await eth.balance_wei(rogue) == 0 and await eth.token_balance(token, rogue) == 0
        await rogue_proc.step()  # a refused move waits before it is tried again
        assert await conn.fetchval("SELECT count(*) FROM wd_txs") == 2

        # 2. the right cold address, while two withdrawals are broadcast but not mined yet
        await E.request_withdrawal(db_url, redis_url, user_id=21, asset="ETH", amount="0.3", address=DEST)
        await E.request_withdrawal(db_url, redis_url, user_id=21, asset="USDT", amount="100", address=DEST)
        eth_chain.set_auto_mine(False)
        try:
            await proc.step()
        finally:
            eth_chain.set_auto_mine(True)
        txs = await conn.fetch("SELECT * FROM wd_txs WHERE state <> 'abandoned' ORDER BY id")
        assert [(t["purpose"], t["asset"]) for t in txs] == [("withdrawal", "ETH"), ("withdrawal", "USDT"),
                                                              ("cold", "USDT"), ("cold", "ETH")]
        assert [int(t["nonce"]) for t in txs] == list(range(start_nonce, start_nonce + 4))  # the refused one reused
        assert all(t["state"] == "broadcast" for t in txs)
        wd_eth, wd_usdt, cold_usdt, cold_eth = txs
        # USDT: down to half its cap, after the pending 99 USDT (100 - the 1 USDT fee) withdrawal
        assert int(wd_usdt["amount_chain"]) == 99 * 10**6
        assert int(cold_usdt["amount_chain"]) == 3000 * 10**6 - 99 * 10**6 - CAP_USDT // 2
        # ETH: down to half its cap, after the pending withdrawal and the gas of every pending transaction
        assert int(wd_eth["amount_chain"]) == 299 * 10**15
        gas_budget = sum(int(t["fee_chain"]) for t in txs)
        assert int(cold_eth["amount_chain"]) == 5 * 10**18 - 299 * 10**15 - gas_budget - CAP_ETH // 2
        assert {t["destination"] for t in (cold_usdt, cold_eth)} == {cold}

        eth_chain.mine(3)
        await proc.step()
        await proc.step()
        final = await conn.fetch("SELECT * FROM wd_txs WHERE state <> 'abandoned' ORDER BY id")
        assert [t["state"] for t in final] == ["confirmed"] * 4
        assert [w["state"] for w in await conn.fetch("SELECT state FROM withdrawals ORDER BY id")] == ["settled"] * 2
        assert await eth.nonce(hot, "latest") == start_nonce + 4

        # on chain: exact amounts at cold; hot + cold = what came in - what was withdrawn - gas paid
        gas_paid = sum(int(t["network_fee_chain"]) for t in final)
        hot_eth, hot_usdt = await eth.balance_wei(hot), await eth.token_balance(token, hot)
        assert await eth.balance_wei(cold) == int(cold_eth["amount_chain"])
        assert await eth.token_balance(token, cold) == int(cold_usdt["amount_chain"])
        assert hot_eth + await eth.balance_wei(cold) == eth_before - 299 * 10**15 - gas_paid
        assert hot_usdt + await eth.token_balance(token, cold) == usdt_before - 99 * 10**6
        assert hot_usdt == CAP_USDT // 2
        assert CAP_ETH // 2 <= hot_eth == CAP_ETH // 2 + gas_budget - gas_paid  # unused gas budget stays hot

        # nothing more to move; the ledger saw only the user's withdrawals (the moves are custody-internal)
        assert await proc.step() == 0
        assert await conn.fetchval("SELECT count(*) FROM wd_txs WHERE state <> 'abandoned'") == 4
        bal = await conn.fetch("SELECT asset, available, frozen FROM balances WHERE user_id = 21 ORDER BY asset")
        assert [(b["asset"], b["available"], b["frozen"]) for b in bal] == [
            ("ETH", 5 * 10**9 - 3 * 10**8, 0), ("USDT", 2900 * 10**6, 0)]
        assert await E.audit_clean(conn) == []
        decisions = await conn.fetch("SELECT asset, destination, approved, rule FROM signer_decisions "
                                     "WHERE asset LIKE 'COLD:%' ORDER BY id")
        assert [(d["asset"], d["destination"].lower(), d["approved"]) for d in decisions] == [
            ("COLD:USDT", rogue.lower(), False), ("COLD:ETH", rogue.lower(), False),
            ("COLD:USDT", cold.lower(), True), ("COLD:ETH", cold.lower(), True)]
    finally:
        eth_chain.set_auto_mine(True)
        await eth.aclose()
        await pool.close()
        await conn.close()


def test_cold_eth_settings_from_the_environment() -> None:
    from ledger.withdrawals_proc.errors import ProcessorConfigError

    config = SweepConfig.from_env({"COFFER_WITHDRAWALS_COLD_ETH_XPUB": "xpub-of-cold",
                                   "COFFER_WITHDRAWALS_HOT_CAP_ETH_WEI": "7", "COFFER_WITHDRAWALS_HOT_CAP_USDT": "9"})
    assert (config.cold_eth_xpub, config.hot_cap_eth_wei, config.hot_cap_tokens) == ("xpub-of-cold", 7, (("USDT", 9),))
    assert SweepConfig.from_env({}).cold_eth_xpub is None
    for bad in ({"COFFER_WITHDRAWALS_HOT_CAP_USDT": "9"},  # a cap without the cold xpub
                {"COFFER_WITHDRAWALS_COLD_ETH_XPUB": "xpub-of-cold"},  # an xpub without a cap
                {"COFFER_WITHDRAWALS_COLD_ETH_XPUB": "x", "COFFER_WITHDRAWALS_HOT_CAP_ETH": "7"},  # not in wei
                {"COFFER_WITHDRAWALS_COLD_ETH_XPUB": "x", "COFFER_WITHDRAWALS_HOT_CAP_ETH_WEI": "-1"},
                {"COFFER_WITHDRAWALS_COLD_ETH_XPUB": "x", "COFFER_WITHDRAWALS_HOT_CAP_USDT": "1.5"}):
        with pytest.raises(ProcessorConfigError):
            SweepConfig.from_env(bad)
