"""The hot wallet's public side as the processor needs it: coin keys, change addresses, the ETH sender.

Built from the hot signer's account exports (`HotSigner.account_xpubs()`), so no private key is
touched here. Bitcoin: the P2WPKH account m/84'/c'/0'; a deposit address `.../0/i` or a change
address `.../1/i` is a hot coin, and its public key is derived from the account xpub.
Ethereum: the hot sender is `m/44'/60'/0'/1/0` of the Ethereum account (deposit addresses are
`.../0/i` and are swept to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.withdrawals_proc.errors import ProcessorConfigError

ETH_HOT_CHANGE, ETH_HOT_INDEX = 1, 0


def _norm(path: str) -> str:
    return path.replace("h", "'")


@dataclass(frozen=True, slots=True)
class HotKeys:
    fingerprint: str
    btc_network: str
    btc_account_path: str  # m/84'/1'/0'
    btc_deriver: Any  # wallet.derive.AccountDeriver
    eth_account_path: str  # m/44'/60'/0'
    eth_deriver: Any

    @classmethod
    def from_signer(cls, signer: Any) -> HotKeys:
        from wallet.derive import open_account

        btc = eth = None
        for export in signer.account_xpubs():
            if export.chain == "btc" and export.script_type == "p2wpkh":
                btc = export
            elif export.chain == "eth":
                eth = export
        if btc is None or eth is None:
            raise ProcessorConfigError("the hot signer exports no P2WPKH or Ethereum account")
        network = signer.network
        return cls(
            fingerprint=signer.fingerprint,
            btc_network=network,
            btc_account_path=_norm(btc.path),
            btc_deriver=open_account(btc.extended_key, "btc", network, "p2wpkh", _norm(btc.path)),
            eth_account_path=_norm(eth.path),
            eth_deriver=open_account(eth.extended_key, "eth", network, None, _norm(eth.path)),
        )

    def btc_pubkey(self, derivation_path: str) -> bytes | None:
        """The public key of a hot BTC path `<account>/<change>/<index>`, None if not of this account."""
        path = _norm(derivation_path)
        prefix = self.btc_account_path + "/"
        if not path.startswith(prefix):
            return None
        parts = path[len(prefix):].split("/")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            return None
        change, index = int(parts[0]), int(parts[1])
        if change not in (0, 1):
            return None
        return bytes(self.btc_deriver.public_key(index, change))

    def btc_change(self, index: int) -> tuple[str, str, bytes]:
        """(address, derivation path, pubkey) of change address `index`."""
        derived = self.btc_deriver.derive(index, 1)
        return derived.address, derived.derivation_path, bytes(self.btc_deriver.public_key(index, 1))

    @property
    def eth_hot_address(self) -> str:
        return str(self.eth_deriver.address(ETH_HOT_INDEX, ETH_HOT_CHANGE))

    @property
    def eth_hot_path(self) -> str:
        return f"{self.eth_account_path}/{ETH_HOT_CHANGE}/{ETH_HOT_INDEX}"

    def eth_deposit_path_ok(self, derivation_path: str) -> bool:
        return _norm(derivation_path).startswith(self.eth_account_path + "/0/")
