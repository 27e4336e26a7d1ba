"""`coffer-signer`: the air-gapped cold signing CLI (init, xpub, sign, sign-eth).

It imports only the standard library at start-up and, inside each command, the offline
crypto libraries (embit, cryptography, coincurve, mnemonic, eth-hash); never Redis,
PostgreSQL, HTTP or web3 code, and it opens no socket (a test runs every sub-command with
socket creation made to fail). The keystore passphrase comes from `--passphrase-file FILE`
(first line), else the environment variable `COFFER_SIGNER_PASSPHRASE`, else an interactive
prompt. Refusals print one line `coffer-signer: error: ...`, exit 1, and write nothing to
`--out` (outputs are written to a temp file and renamed only after a successful signature).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from signer.errors import SignerError, UsageError

PASSPHRASE_ENV = "COFFER_SIGNER_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
PROG = "coffer-signer"


def _out(line: str = "") -> None:
    print(line, flush=True)


def _interactive() -> bool:
    return sys.stdin.isatty()


def read_passphrase(args: argparse.Namespace, *, confirm: bool = False) -> str:
    """Passphrase from --passphrase-file, $COFFER_SIGNER_PASSPHRASE, or a prompt (in that order)."""
    if args.passphrase_file:
        try:
            text = Path(args.passphrase_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read --passphrase-file: {exc.strerror}") from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise UsageError("--passphrase-file is empty")
        return lines[0]
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env
    if not _interactive():
        raise UsageError(f"no passphrase: use --passphrase-file, ${PASSPHRASE_ENV}, or run interactively")
    first = getpass.getpass("Keystore passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise UsageError("the two passphrases differ")
    return first


def _confirm(args: argparse.Namespace, question: str) -> None:
    if args.yes:
        return
    if not _interactive():
        raise UsageError("confirmation needed: run interactively or pass --yes")
    answer = input(f"{question} Type 'yes' to sign: ").strip().lower()
    if answer != "yes":
        raise UsageError("not confirmed; nothing was signed or written")


def _unlock(args: argparse.Namespace) -> Any:
    from signer import keystore

    doc = keystore.read_keystore(Path(args.keystore))
    return keystore.unseal(doc, read_passphrase(args))


def cmd_init(args: argparse.Namespace) -> int:
    from signer import keystore

    path = Path(args.keystore)
    if path.exists():
        raise UsageError(f"{path} already exists; refusing to overwrite a keystore")
    if args.mnemonic_file:
        try:
            words = Path(args.mnemonic_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read --mnemonic-file: {exc.strerror}") from None
        imported = True
    else:
        words = keystore.generate_mnemonic(args.words)
        imported = False
    seed = keystore.UnlockedSeed(words)
    if not imported:
        _show_new_mnemonic(seed)
    passphrase = read_passphrase(args, confirm=True)
    doc = keystore.seal(seed, passphrase, scrypt_n=args.scrypt_n)
    keystore.save(path, doc)
    _out(f"keystore written: {path} (fingerprint {seed.fingerprint}, scrypt n={args.scrypt_n})")
    return 0


def _show_new_mnemonic(seed: Any) -> None:
    import secrets

    words = seed.mnemonic_words().split()
    _out("New mnemonic (write it down on paper now; it is shown only once):")
    for i in range(0, len(words), 6):
        _out("  " + "  ".join(f"{i + j + 1:2d}.{w}" for j, w in enumerate(words[i : i + 6])))
    if not _interactive():
        return
    picks = sorted(secrets.SystemRandom().sample(range(len(words)), 2))
    input("Press Enter once it is written down (the screen will be cleared)...")
    print("\033[2J\033[H", end="", flush=True)
    for k in picks:
        if input(f"Confirm: word #{k + 1}? ").strip().lower() != words[k]:
            raise UsageError("confirmation failed: the words do not match; no keystore written")


def cmd_xpub(args: argparse.Namespace) -> int:
    from signer.hd import account_export

    seed = _unlock(args)
    export = account_export(seed, args.chain, args.network, args.account, args.type)
    _out(export.extended_key)
    _out(f"key origin: {export.origin}")
    _out(f"path: {export.path}")
    _out(f"descriptor: {export.descriptor}")
    return 0


def _sat_vb_to_msat(text: str) -> int:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise UsageError(f"--max-fee-rate must be a decimal number of sat/vB, got {text!r}") from None
    if value <= 0 or value != value.quantize(Decimal("0.001")):
        raise UsageError("--max-fee-rate must be positive with at most 3 decimals")
    return int(value * 1000)


def _read_in(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read --in {path}: {exc.strerror}") from None


def _infer_network(psbt: Any, fingerprint: str) -> str:
    from signer.hd import HARDENED
    from signer.psbt_sign import _our_derivation

    fp = bytes.fromhex(fingerprint)
    for inp in psbt.inputs:
        ours = _our_derivation(inp, fp)
        if ours is not None and len(ours[1]) >= 2:
            return "mainnet" if ours[1][1] == HARDENED else "testnet"
    raise UsageError(f"no input names keystore {fingerprint}; nothing to sign")


def cmd_sign(args: argparse.Namespace) -> int:
    from signer import keystore
    from signer.hd import root_key
    from signer.psbt_sign import FeeCaps, analyze, parse_psbt, serialize_psbt, sign_checked

    psbt, form = parse_psbt(_read_in(args.infile))
    caps = FeeCaps(args.max_fee_sat, _sat_vb_to_msat(args.max_fee_rate))
    seed = _unlock(args)
    network = args.network or _infer_network(psbt, seed.fingerprint)
    root = root_key(seed, network)
    summary = analyze(psbt, root, seed.fingerprint, network, caps,
                      require_non_witness_utxo=not args.allow_witness_utxo_only)
    for line in summary.lines():
        _out(line)
    _confirm(args, "Sign this transaction?")
    count = sign_checked(psbt, root, summary)
    keystore.write_atomic(Path(args.outfile), serialize_psbt(psbt, form), mode=0o644)
    _out(f"signed {count} input(s); {form} PSBT written to {args.outfile}")
    return 0


def cmd_sign_eth(args: argparse.Namespace) -> int:
    from signer import keystore
    from signer.eth_sign import address_of, derive_eth_key, parse_eth_tx, sign_eth_tx
    from signer.hd import root_key

    tx = parse_eth_tx(_read_in(args.infile))
    if tx.max_fee_wei > args.max_fee_wei:
        raise SignerError(
            f"maximum fee {tx.max_fee_wei} wei is above the cap of {args.max_fee_wei} wei (--max-fee-wei)"
        )
    seed = _unlock(args)
    key = derive_eth_key(root_key(seed, "mainnet"), tx.derivation_path)
    for line in tx.summary_lines(address_of(key)):
        _out(line)
    _confirm(args, "Sign this transaction?")
    signed = sign_eth_tx(tx, key, max_fee_wei=args.max_fee_wei)
    keystore.write_atomic(Path(args.outfile), (signed.raw_hex + "\n").encode(), mode=0o644)
    _out(f"transaction hash: {signed.tx_hash}")
    _out(f"raw signed transaction written to {args.outfile}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from signer.eth_sign import DEFAULT_MAX_FEE_WEI
    from signer.keystore import DEFAULT_SCRYPT_N
    from signer.psbt_sign import DEFAULT_MAX_FEE_RATE_MSAT_PER_VB, DEFAULT_MAX_FEE_SAT

    parser = argparse.ArgumentParser(prog=PROG, description="Coffer air-gapped signer (no network code).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--keystore", required=True, help="keystore file")
        p.add_argument(
            "--passphrase-file", help=f"read the passphrase from this file (else ${PASSPHRASE_ENV}, else a prompt)"
        )

    p = sub.add_parser("init", help="create a keystore from a new or imported BIP39 mnemonic")
    common(p)
    p.add_argument("--words", type=int, choices=(12, 24), default=24)
    p.add_argument("--mnemonic-file", help="import this mnemonic instead of generating one")
    p.add_argument("--scrypt-n", type=int, default=DEFAULT_SCRYPT_N, help="scrypt cost (power of two; default 2**17)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("xpub", help="print an account extended public key, key origin and descriptor")
    common(p)
    p.add_argument("--chain", required=True, choices=("btc", "eth"))
    p.add_argument("--network", required=True, choices=("mainnet", "testnet", "regtest"))
    p.add_argument("--account", type=int, default=0)
    p.add_argument("--type", choices=("p2wpkh", "p2tr"), default=None, help="Bitcoin script type (default p2wpkh)")
    p.set_defaults(func=cmd_xpub)

    p = sub.add_parser("sign", help="sign a PSBT (P2WPKH / P2TR key path) after showing what it does")
    common(p)
    p.add_argument("--in", dest="infile", required=True)
    p.add_argument("--out", dest="outfile", required=True)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--network", choices=("mainnet", "testnet", "regtest"),
                   help="default: inferred from the inputs' coin type (0' mainnet, 1' testnet)")
    p.add_argument("--max-fee-sat", type=int, default=DEFAULT_MAX_FEE_SAT)
    p.add_argument("--allow-witness-utxo-only", action="store_true",
                   help="accept P2WPKH inputs without their previous transaction (weaker fee check)")
    p.add_argument("--max-fee-rate", default=str(Decimal(DEFAULT_MAX_FEE_RATE_MSAT_PER_VB) / 1000),
                   help="sat/vB, decimal")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("sign-eth", help="sign an Ethereum transaction described as JSON")
    common(p)
    p.add_argument("--in", dest="infile", required=True)
    p.add_argument("--out", dest="outfile", required=True)
    p.add_argument("--yes", action="store_true")
    p.add_argument("--max-fee-wei", type=int, default=DEFAULT_MAX_FEE_WEI)
    p.set_defaults(func=cmd_sign_eth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SignerError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
