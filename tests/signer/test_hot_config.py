"""Hot signer built from environment variables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from signer.errors import PolicyError, SignerError, WrongPassphraseError
from signer.hot_config import hot_signer_from_env
from tests.signer.helpers import PASSPHRASE, make_keystore


def env_for(tmp_path: Path) -> dict[str, str]:
    make_keystore(tmp_path / "hot.json")
    (tmp_path / "pw").write_text(PASSPHRASE + "\n")
    (tmp_path / "policy.json").write_text(json.dumps(
        {"rules": [{"name": "btc-small", "asset": "BTC", "max_single_chain_units": "100000"}]}))
    return {
        "COFFER_SIGNER_HOT_KEYSTORE": str(tmp_path / "hot.json"),
        "COFFER_SIGNER_HOT_PASSPHRASE_FILE": str(tmp_path / "pw"),
        "COFFER_SIGNER_POLICY_FILE": str(tmp_path / "policy.json"),
        "COFFER_SIGNER_NETWORK": "regtest",
        "COFFER_SIGNER_ETH_CHAIN_ID": "1337",
        "COFFER_SIGNER_MAX_FEE_RATE": "25.5",
    }


def test_from_env(tmp_path: Path) -> None:
    signer = hot_signer_from_env(env_for(tmp_path))
    assert signer.fingerprint == "73c5da0a" and signer.network == "regtest" and signer.eth_chain_id == 1337
    assert signer.fee_caps.max_fee_rate_msat_per_vb == 25_500
    assert [r.name for r in signer.policy.rules] == ["btc-small"]


@pytest.mark.parametrize(("change", "error"), [
    ({"COFFER_SIGNER_NETWORK": ""}, SignerError),
    ({"COFFER_SIGNER_NETWORK": "signet"}, SignerError),
    ({"COFFER_SIGNER_POLICY_FILE": "/nonexistent/policy.json"}, PolicyError),
    ({"COFFER_SIGNER_HOT_PASSPHRASE_FILE": "", "COFFER_SIGNER_HOT_PASSPHRASE": "nope"}, WrongPassphraseError),
    ({"COFFER_SIGNER_HOT_PASSPHRASE_FILE": ""}, SignerError),
    ({"COFFER_SIGNER_ETH_CHAIN_ID": "x"}, SignerError),
])
def test_from_env_errors(tmp_path: Path, change: dict[str, str], error: type[Exception]) -> None:
    env = {**env_for(tmp_path), **change}
    with pytest.raises(error):
        hot_signer_from_env(env)
