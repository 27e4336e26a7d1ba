"""`coffer wallet derive`: the CLI contract (address alone on stdout; one stderr line on errors)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from coffer.cli import main
from tests.wallet.vectors import load
from wallet.bip32 import ExtendedKey

BIP84 = load("bip84_vectors.json")
BIP86 = load("bip86_vectors.json")
ZPUB = ExtendedKey.parse(BIP84["account_xprv"]).neuter().serialize()
TPUB = ExtendedKey.parse(BIP86["account_xpub"]).with_version("tpub").serialize()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def test_btc_p2wpkh_and_p2tr(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "wallet", "derive", "--xpub", ZPUB, "--chain", "btc", "--network", "mainnet",
                       "--index", "1")
    assert (rc, out, err) == (0, BIP84["addresses"][1]["address"] + "\n", "")
    rc, out, _ = run(capsys, "wallet", "derive", "--xpub", ZPUB, "--chain", "btc", "--network", "mainnet",
                     "--index", "0", "--change", "1")
    assert out.strip() == BIP84["addresses"][2]["address"]
    rc, out, _ = run(capsys, "wallet", "derive", "--xpub", BIP86["account_xpub"], "--chain", "btc",
                     "--network", "mainnet", "--index", "1", "--type", "p2tr")
    assert (rc, out.strip()) == (0, BIP86["addresses"][1]["address"])


def test_regtest_and_eth(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "wallet", "derive", "--xpub", TPUB, "--chain", "btc", "--network", "regtest",
                     "--index", "0", "--type", "p2tr")
    assert rc == 0 and out.startswith("bcrt1p") and out.count("\n") == 1
    eth = load("eth_bip44_vectors.json")
    from wallet.bip39 import mnemonic_to_seed

    xpub = ExtendedKey.from_seed(mnemonic_to_seed(eth["mnemonic"]), "mainnet").derive("m/44'/60'/0'").neuter()
    rc, out, _ = run(capsys, "wallet", "derive", "--xpub", xpub.serialize(), "--chain", "eth", "--network",
                     "mainnet", "--index", "0")
    assert (rc, out.strip()) == (0, eth["addresses"][0]["address"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--xpub", ZPUB[:-1] + ("a" if ZPUB[-1] != "a" else "b"), "--chain", "btc", "--network", "mainnet",
          "--index", "0"], "checksum"),
        (["--xpub", "not-a-key", "--chain", "btc", "--network", "mainnet", "--index", "0"], "invalid extended"),
        (["--xpub", ZPUB, "--chain", "btc", "--network", "testnet", "--index", "0"], "not testnet"),
        (["--xpub", TPUB, "--chain", "btc", "--network", "mainnet", "--index", "0"], "not mainnet"),
        (["--xpub", ZPUB, "--chain", "btc", "--network", "mainnet", "--index", "0'"], "hardened"),
        (["--xpub", ZPUB, "--chain", "btc", "--network", "mainnet", "--index", "2147483648"], "hardened"),
        (["--xpub", ZPUB, "--chain", "btc", "--network", "mainnet", "--index", "-1"], "negative"),
        (["--xpub", ZPUB, "--chain", "btc", "--network", "mainnet", "--index", "0", "--type", "p2tr"], "P2WPKH"),
        (["--xpub", BIP84["account_xprv"], "--chain", "btc", "--network", "mainnet", "--index", "0"],
         "expected an extended public key"),
        (["--xpub", ZPUB, "--chain", "btc", "--network", "signet", "--index", "0"], "unknown network"),
        (["--xpub", ZPUB, "--chain", "btc", "--network", "mainnet", "--index", "0", "--change", "2"], "change"),
    ],
)
def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    rc, out, err = run(capsys, "wallet", "derive", *args)
    assert rc == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("coffer: error: ") and message in err
    assert "Traceback" not in err


def test_console_script_subprocess() -> None:
    """The installed `coffer` entry point, as operators and acceptance checks call it."""
    ok = subprocess.run(
        [sys.executable, "-m", "coffer", "wallet", "derive", "--xpub", ZPUB, "--chain", "btc", "--network",
         "mainnet", "--index", "0"], capture_output=True, text=True, timeout=60, check=False,
    )
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, BIP84["addresses"][0]["address"] + "\n", "")
    bad = subprocess.run(
        [sys.executable, "-m", "coffer", "wallet", "derive", "--xpub", TPUB, "--chain", "btc", "--network",
         "mainnet", "--index", "0"], capture_output=True, text=True, timeout=60, check=False,
    )
    assert bad.returncode != 0 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "not mainnet" in bad.stderr


def test_wallet_config_command(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    import json

    from wallet.config import load_config

    eth_xpub = ExtendedKey.parse(BIP86["rootpub"]).serialize()  # any valid mainnet xpub
    out = tmp_path / "wallet.json"
    rc, stdout, err = run(capsys, "wallet", "config", "--network", "regtest", "--btc-xpub", TPUB, "--btc-type", "p2tr",
                          "--eth-xpub", eth_xpub, "--usdt-contract", "0x" + "AB" * 20, "--out", str(out))
    assert (rc, stdout, err) == (0, "", "")
    config = load_config(out)
    assert set(config.assets) == {"BTC", "ETH", "USDT"}
    assert config.asset("BTC").addr_type == "p2tr" and config.asset("USDT").token == "0x" + "ab" * 20
    rc, stdout, _ = run(capsys, "wallet", "config", "--network", "regtest", "--btc-xpub", TPUB)
    assert rc == 0 and json.loads(stdout)["assets"]["BTC"]["xpub"] == TPUB
    rc, stdout, err = run(capsys, "wallet", "config", "--network", "mainnet", "--btc-xpub", TPUB)
    assert rc == 1 and stdout == "" and err.count("\n") == 1 and "not mainnet" in err
    rc, _, err = run(capsys, "wallet", "config", "--network", "regtest")
    assert rc == 1 and "at least one" in err
