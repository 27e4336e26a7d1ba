"""Pure builders: Bitcoin coin selection, fee, dust, PSBT and RBF bump (cross-checked with the
signer's own analysis); Ethereum EIP-1559 fees, the >= 10% replacement rule, ERC-20 calldata."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.withdrawals_proc import btc_build, eth_build
from ledger.withdrawals_proc.errors import BuildError, InsufficientHotFundsError
from ledger.withdrawals_proc.hotkeys import HotKeys
from signer.hot import HotSigner
from signer.policy import Policy
from signer.psbt_sign import analyze, parse_psbt
from tests.signer.helpers import funding_tx, make_keystore

DEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def _coin(value: int, txid_byte: int = 1) -> btc_build.Coin:
    return btc_build.Coin(f"{txid_byte:02x}" * 32, 0, value, "m/84'/1'/0'/0/0", b"\x02" + bytes(32), "")


def test_largest_first_with_change_exact_fee() -> None:
    chosen, fee, change = btc_build.select_coins([_coin(50_000, 2), _coin(100_000, 1)], 60_000, 22, 22, 2_000)
    assert [c.value_sat for c in chosen] == [100_000]
    vsize = 11 + 68 + 31 + 31
    assert fee == 2 * vsize and change == 100_000 - 60_000 - fee


def test_change_below_dust_goes_to_the_fee() -> None:
    chosen, fee, change = btc_build.select_coins([_coin(60_500)], 60_000, 22, 22, 1_000)
    assert change == 0 and fee == 500 and len(chosen) == 1


def test_not_enough_coins() -> None:
    with pytest.raises(InsufficientHotFundsError, match="30000 sat"):
        btc_build.select_coins([_coin(10_000, 1), _coin(20_000, 2)], 40_000, 22, 22, 1_000)
    with pytest.raises(BuildError):
        btc_build.select_coins([_coin(10_000)], 0, 22, 22, 1_000)


@given(st.lists(st.integers(min_value=1_000, max_value=10**8), min_size=1, max_size=8),
       st.integers(min_value=600, max_value=10**7), st.integers(min_value=1_000, max_value=50_000))
def test_selection_balances_exactly(values: list[int], amount: int, rate: int) -> None:
    coins = [_coin(v, i + 1) for i, v in enumerate(values)]
    try:
        chosen, fee, change = btc_build.select_coins(coins, amount, 22, 22, rate)
    except InsufficientHotFundsError:
        assert sum(values) < amount + btc_build.fee_for(rate, btc_build.estimate_vsize(len(values), (22,)))
        return
    assert sum(c.value_sat for c in chosen) == amount + fee + change
    assert change == 0 or change >= btc_build.DUST_LIMIT_SAT
    n_out = (22, 22) if change else (22,)
    assert fee >= btc_build.fee_for(rate, btc_build.estimate_vsize(len(chosen), n_out))


def _hot(tmp_path: Any) -> tuple[HotSigner, HotKeys]:
    seed = make_keystore(tmp_path / "k")
    signer = HotSigner(seed, Policy([]), network="regtest")
    return signer, HotKeys.from_signer(signer)


def test_psbt_is_what_the_signer_reads(tmp_path: Any) -> None:
    signer, keys = _hot(tmp_path)
    path = "m/84'/1'/0'/0/3"
    pub = keys.btc_pubkey(path)
    assert pub is not None
    from embit import script
    from embit.ec import PublicKey

    prev = funding_tx(script.p2wpkh(PublicKey.parse(pub)), 500_000)
    coin = btc_build.Coin(bytes(prev.txid()).hex(), 0, 500_000, path, pub, bytes(prev.serialize()).hex())
    chosen, fee, change_sat = btc_build.select_coins([coin], 200_000, 22, 22, 3_000)
    address, cpath, cpub = keys.btc_change(0)
    built = btc_build.build_psbt(chosen, destination=DEST, amount_sat=200_000, fee_sat=fee, change_sat=change_sat,
                                 change=btc_build.ChangeTarget(address, cpath, cpub), fingerprint=keys.fingerprint)
    psbt, _ = parse_psbt(built.psbt_b64.encode())
    from signer.hd import root_key

    summary = analyze(psbt, root_key(signer._seed, "regtest"), keys.fingerprint, "regtest")
    assert summary.fee_sat == fee and summary.txid == built.txid
    assert [(o.address, o.amount_sat, o.is_change) for o in summary.outputs] == [
        (DEST, 200_000, False), (address, change_sat, True)]
    assert built.vsize_vb >= summary.vsize_vb  # our estimate never under-pays the rate

    bumped, new_change, _vsize = btc_build.bump_psbt(built.psbt_b64, new_fee_sat=fee + 1_000)
    assert new_change == change_sat - 1_000
    again, _ = parse_psbt(bumped.encode())
    after = analyze(again, root_key(signer._seed, "regtest"), keys.fingerprint, "regtest")
    assert after.fee_sat == fee + 1_000 and after.outputs[0].amount_sat == 200_000
    assert [i.outpoint for i in after.inputs] == [i.outpoint for i in summary.inputs]
    with pytest.raises(BuildError, match="change cannot pay"):
        btc_build.bump_psbt(built.psbt_b64, new_fee_sat=500_000)
    assert base64.b64decode(bumped)[:5] == b"psbt\xff"


def test_fees_from_fee_history() -> None:
    history = {"oldestBlock": "0x1", "baseFeePerGas": ["0x64", "0x6e", "0x78"],
               "reward": [["0x5"], [hex(3 * 10**9)], [hex(2 * 10**9)]]}
    fees = eth_build.fees_from_history(history)
    assert fees == eth_build.Fees(2 * 0x78 + 2 * 10**9, 2 * 10**9)
    low = eth_build.fees_from_history({"baseFeePerGas": ["0x10"], "reward": []}, min_tip_wei=7)
    assert low == eth_build.Fees(0x20 + 7, 7)
    with pytest.raises(BuildError):
        eth_build.fees_from_history({})


@given(st.integers(min_value=1, max_value=10**13), st.integers(min_value=0, max_value=10**13))
def test_replacement_fees_at_least_ten_percent_higher(fee: int, tip: int) -> None:
    old = eth_build.Fees(max(fee, tip), min(fee, tip))
    new = eth_build.bumped(old)
    assert new.max_fee_per_gas_wei * 10 >= old.max_fee_per_gas_wei * 11
    assert new.max_priority_fee_per_gas_wei * 10 >= old.max_priority_fee_per_gas_wei * 11
    assert new.max_priority_fee_per_gas_wei <= new.max_fee_per_gas_wei


def test_erc20_calldata_matches_the_abi() -> None:
    from eth_abi.abi import encode
    from eth_utils.crypto import keccak

    to = "0x00000000000000000000000000000000DeaDBeef"
    data = eth_build.erc20_transfer_data(to, 12_345)
    expected = keccak(text="transfer(address,uint256)")[:4] + encode(["address", "uint256"], [to, 12_345])
    assert data == "0x" + expected.hex()


def test_transfer_tx_is_what_the_signer_parses() -> None:
    from signer.eth_sign import parse_eth_tx

    fees = eth_build.Fees(3 * 10**9, 10**9)
    tx = eth_build.transfer_tx(chain_id=5, nonce=7, destination="0x" + "35" * 20, amount=10**18, fees=fees,
                               derivation_path="m/44'/60'/0'/1/0", token_contract=None)
    parsed = parse_eth_tx(eth_build.dumps(tx))
    assert (parsed.nonce, parsed.value_wei, parsed.gas, parsed.max_fee_per_gas_wei) == (7, 10**18, 21_000, 3 * 10**9)
    token = eth_build.transfer_tx(chain_id=5, nonce=8, destination="0x" + "35" * 20, amount=99, fees=fees,
                                  derivation_path="m/44'/60'/0'/1/0", token_contract="0x" + "aa" * 20)
    parsed = parse_eth_tx(json.dumps(token))
    assert parsed.value_wei == 0 and parsed.to == bytes.fromhex("aa" * 20) and parsed.gas == 100_000
