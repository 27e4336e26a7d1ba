"""Building the hot signer from the environment (for the withdrawal processor's entry point).

Variables (all read once, by `hot_signer_from_env`):

- `COFFER_SIGNER_HOT_KEYSTORE`: path of the hot keystore file (required).
- `COFFER_SIGNER_HOT_PASSPHRASE_FILE` (preferred) or `COFFER_SIGNER_HOT_PASSPHRASE`: its passphrase.
- `COFFER_SIGNER_POLICY_FILE`: JSON policy (see `signer.policy`; required: no file, no hot signing).
- `COFFER_SIGNER_NETWORK`: mainnet, testnet or regtest (required; no default).
- `COFFER_SIGNER_ETH_CHAIN_ID`: the only Ethereum chain id the hot signer will sign for (optional).
- `COFFER_SIGNER_MAX_FEE_SAT`, `COFFER_SIGNER_MAX_FEE_RATE` (sat/vB, decimal), `COFFER_SIGNER_MAX_FEE_WEI`:
  fee caps (optional; defaults as in the cold signer).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path

from signer.errors import PolicyError, SignerError
from signer.eth_sign import DEFAULT_MAX_FEE_WEI
from signer.hot import HotSigner
from signer.policy import Policy
from signer.psbt_sign import DEFAULT_MAX_FEE_RATE_MSAT_PER_VB, DEFAULT_MAX_FEE_SAT, FeeCaps


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "")
    if raw == "":
        return default
    if not raw.isdigit():
        raise SignerError(f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise SignerError(f"{name} must be set for the hot signer")
    return value


def load_policy(path: Path) -> Policy:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise PolicyError(f"policy file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PolicyError(f"policy file {path} must hold a JSON object")
    return Policy.from_config(doc)


def hot_signer_from_env(environ: Mapping[str, str] | None = None) -> HotSigner:
    """Unlock the hot keystore and load the policy named by the environment (see module doc)."""
    env = os.environ if environ is None else environ
    keystore_path = Path(_required(env, "COFFER_SIGNER_HOT_KEYSTORE"))
    pass_file = env.get("COFFER_SIGNER_HOT_PASSPHRASE_FILE", "")
    if pass_file:
        try:
            lines = Path(pass_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SignerError(f"cannot read COFFER_SIGNER_HOT_PASSPHRASE_FILE: {exc.strerror}") from None
        passphrase = lines[0] if lines else ""
    else:
        passphrase = env.get("COFFER_SIGNER_HOT_PASSPHRASE", "")
    if not passphrase:
        raise SignerError("set COFFER_SIGNER_HOT_PASSPHRASE_FILE or COFFER_SIGNER_HOT_PASSPHRASE")
    network = _required(env, "COFFER_SIGNER_NETWORK")
    if network not in ("mainnet", "testnet", "regtest"):
        raise SignerError(f"COFFER_SIGNER_NETWORK must be mainnet, testnet or regtest, got {network!r}")
    policy = load_policy(Path(_required(env, "COFFER_SIGNER_POLICY_FILE")))
    rate_raw = env.get("COFFER_SIGNER_MAX_FEE_RATE", "")
    rate = DEFAULT_MAX_FEE_RATE_MSAT_PER_VB
    if rate_raw:
        try:
            rate = int(Decimal(rate_raw) * 1000)
        except InvalidOperation:
            raise SignerError(f"COFFER_SIGNER_MAX_FEE_RATE must be a decimal sat/vB, got {rate_raw!r}") from None
    caps = FeeCaps(_int(env, "COFFER_SIGNER_MAX_FEE_SAT", DEFAULT_MAX_FEE_SAT) or 0, rate)
    return HotSigner.from_keystore(
        keystore_path, passphrase, policy, network=network,
        eth_chain_id=_int(env, "COFFER_SIGNER_ETH_CHAIN_ID", None), fee_caps=caps,
        max_fee_wei=_int(env, "COFFER_SIGNER_MAX_FEE_WEI", DEFAULT_MAX_FEE_WEI) or 0,
    )
