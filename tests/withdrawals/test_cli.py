"""`coffer withdrawals ...` user errors end as one line `coffer: error: ...` and exit 1, never a
traceback; settings are checked with clear reasons."""

from __future__ import annotations

import pytest

from coffer.cli import main
from ledger.withdrawals_proc.errors import ProcessorConfigError
from ledger.withdrawals_proc.processor import ProcessorConfig
from ledger.withdrawals_proc.sweep import SweepConfig


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


def test_cli_user_errors(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("COFFER_SIGNER_HOT_KEYSTORE", "COFFER_WITHDRAWALS_EXPORT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COFFER_DATABASE_URL", db_url)
    assert main(["withdrawals", "list"]) == 0
    assert "0 withdrawal(s)" in capsys.readouterr().out
    assert main(["withdrawals", "show", "42"]) == 1
    assert _err(capsys) == "coffer: error: no withdrawal 42"
    assert main(["withdrawals", "reject", "42", "--reason", "no"]) == 1
    assert _err(capsys) == "coffer: error: no withdrawal 42 taken up by the processor"
    assert main(["withdrawals", "export"]) == 1
    assert "pass --dir or set COFFER_WITHDRAWALS_EXPORT_DIR" in _err(capsys)
    assert main(["withdrawals", "approve", "42"]) == 1
    assert "COFFER_SIGNER_HOT_KEYSTORE must be set" in _err(capsys)
    assert main(["withdrawals", "import", "--signed", "/nonexistent/file"]) == 1
    assert "cannot read --signed" in _err(capsys)
    monkeypatch.delenv("COFFER_DATABASE_URL")
    assert main(["withdrawals", "list"]) == 1
    assert "COFFER_DATABASE_URL" in _err(capsys)


def test_settings_from_env() -> None:
    cfg = ProcessorConfig.from_env({"COFFER_WITHDRAWALS_FEE_FLOOR_SAT_VB": "1.5",
                                    "COFFER_WITHDRAWALS_BUMP_AFTER_S": "600"})
    assert (cfg.fee_floor_msat_per_vb, cfg.bump_after_s, cfg.export_dir) == (1500, 600.0, None)
    with pytest.raises(ProcessorConfigError, match="COFFER_WITHDRAWALS_"):
        ProcessorConfig.from_env({"COFFER_WITHDRAWALS_POLL_S": "soon"})
    with pytest.raises(ProcessorConfigError, match="together"):
        SweepConfig.from_env({"COFFER_WITHDRAWALS_HOT_CAP_BTC_SAT": "100000000"})
    sweep = SweepConfig.from_env({"COFFER_WITHDRAWALS_SWEEP_ETH": "1"})
    assert sweep.sweep_eth and sweep.hot_cap_btc_sat is None
