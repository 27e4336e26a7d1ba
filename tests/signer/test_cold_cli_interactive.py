"""Interactive paths of `coffer-signer`: passphrase prompts, the new-mnemonic confirmation, sign confirmation."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from signer import cold_cli, keystore
from signer.cold_cli import main
from signer.keystore import UnlockedSeed
from tests.signer.helpers import MNEMONIC, PASSPHRASE, build_psbt, make_keystore

WORDS = MNEMONIC.split()


@pytest.fixture(autouse=True)
def tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COFFER_SIGNER_PASSPHRASE", raising=False)
    monkeypatch.setattr(cold_cli, "_interactive", lambda: True)


def answers(monkeypatch: pytest.MonkeyPatch, passphrases: list[str], reply: Callable[[str], str]) -> list[str]:
    asked: list[str] = []
    queue = list(passphrases)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": queue.pop(0))

    def fake_input(prompt: str = "") -> str:
        asked.append(prompt)
        return reply(prompt)

    monkeypatch.setattr("builtins.input", fake_input)
    return asked


def word_reply(correct: bool) -> Callable[[str], str]:
    def reply(prompt: str) -> str:
        match = re.search(r"word #(\d+)", prompt)
        if match is None:
            return ""
        word = WORDS[int(match.group(1)) - 1]
        return word if correct else word + "x"

    return reply


def test_init_interactive_confirms_two_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(keystore, "generate_mnemonic", lambda words: MNEMONIC)
    asked = answers(monkeypatch, [PASSPHRASE, PASSPHRASE], word_reply(True))
    ks = tmp_path / "ks.json"
    assert main(["init", "--keystore", str(ks), "--words", "12", "--scrypt-n", "1024"]) == 0
    assert sum("Confirm: word #" in q for q in asked) == 2
    assert keystore.load(ks, PASSPHRASE).fingerprint == UnlockedSeed(MNEMONIC).fingerprint
    assert "12.about" in capsys.readouterr().out


def test_init_interactive_wrong_word_or_passphrase_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(keystore, "generate_mnemonic", lambda words: MNEMONIC)
    ks = tmp_path / "ks.json"
    answers(monkeypatch, [PASSPHRASE, PASSPHRASE], word_reply(False))
    assert main(["init", "--keystore", str(ks), "--scrypt-n", "1024"]) == 1
    assert "confirmation failed" in capsys.readouterr().err and not ks.exists()
    answers(monkeypatch, [PASSPHRASE, PASSPHRASE + "!"], word_reply(True))
    assert main(["init", "--keystore", str(ks), "--scrypt-n", "1024"]) == 1
    assert "passphrases differ" in capsys.readouterr().err and not ks.exists()


@pytest.mark.parametrize(("answer", "rc"), [("yes", 0), ("no", 1), ("", 1)])
def test_sign_asks_for_confirmation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str], answer: str, rc: int) -> None:
    ks = tmp_path / "ks.json"
    make_keystore(ks)
    src, out = tmp_path / "in.psbt", tmp_path / "out.psbt"
    src.write_text(build_psbt(UnlockedSeed(MNEMONIC)).to_base64())
    asked = answers(monkeypatch, [PASSPHRASE], lambda prompt: answer)
    assert main(["sign", "--keystore", str(ks), "--in", str(src), "--out", str(out)]) == rc
    assert asked and "Sign this transaction?" in asked[0]
    captured = capsys.readouterr()
    assert "fee: 10000 sat" in captured.out  # the summary came before the question
    assert out.exists() == (rc == 0)
