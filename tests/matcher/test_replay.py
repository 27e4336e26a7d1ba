"""`coffer matcher replay`: the JSON-lines contract of issue 7."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import pytest

from matcher.errors import ReplayError
from matcher.replay import Replayer, parse_step


def _replay(lines: list[str], tick: str = "0.01", lot: str = "0.1", stp: str = "none") -> list[dict[str, object]]:
    return list(Replayer(Decimal(tick), Decimal(lot), stp).run(lines))  # type: ignore[arg-type]


def test_issue_example_flow() -> None:
    out = _replay([
        '{"op":"limit","id":1,"user":7,"side":"buy","price":"100.25","qty":"0.5","tif":"GTC","post_only":false}',
        '{"op":"market","id":2,"user":8,"side":"sell","qty":"1.5"}',
        '{"op":"cancel","id":1}',
    ])
    assert out == [
        {"event": "open", "seq": 1, "id": 1, "remaining": "0.5"},
        {"event": "trade", "seq": 2, "taker": 2, "maker": 1, "price": "100.25", "qty": "0.5"},
        {"event": "done", "seq": 3, "id": 1, "reason": "filled", "remaining": "0"},
        {"event": "done", "seq": 4, "id": 2, "reason": "expired", "remaining": "1"},
        {"event": "error", "seq": 5, "line": 3, "id": 1, "reason": "cancel refused: order not on the book"},
    ]


def test_errors_take_a_seq_and_replay_goes_on() -> None:
    out = _replay([
        "not json",
        '{"op":"limit","id":1,"user":1,"side":"buy","price":"100.255","qty":"1"}',
        '{"op":"limit","id":2,"user":1,"side":"buy","price":"100","qty":"0.15"}',
        '{"op":"limit","id":3,"user":1,"side":"up","price":"100","qty":"1"}',
        '{"op":"market","id":4,"user":1,"side":"sell","funds":"1"}',
        "",
        '{"op":"limit","id":5,"user":1,"side":"sell","price":"101.5","qty":"2","tif":"GTC"}',
        '{"op":"cancel","id":5}',
    ])
    assert [e["event"] for e in out] == ["error", "error", "error", "error", "error", "open", "done"]
    assert [e["seq"] for e in out] == list(range(1, 8))
    assert [e.get("line") for e in out[:5]] == [1, 2, 3, 4, 5]
    assert "multiple of 0.01" in str(out[1]["reason"])
    assert "multiple of 0.1" in str(out[2]["reason"])
    assert out[6] == {"event": "done", "seq": 7, "id": 5, "reason": "canceled", "remaining": "2"}


def test_tif_post_only_and_funds() -> None:
    out = _replay([
        '{"op":"limit","id":1,"user":1,"side":"sell","price":"10","qty":"1"}',
        '{"op":"limit","id":2,"user":2,"side":"buy","price":"10","qty":"2","tif":"FOK"}',
        '{"op":"limit","id":3,"user":2,"side":"buy","price":"10","qty":"2","tif":"IOC"}',
        '{"op":"limit","id":4,"user":2,"side":"sell","price":"9","qty":"1","post_only":true}',
        '{"op":"limit","id":5,"user":2,"side":"sell","price":"11","qty":"3","post_only":true}',
        '{"op":"market","id":6,"user":3,"side":"buy","funds":"25"}',
    ], tick="0.5", lot="1")
    assert out == [
        {"event": "open", "seq": 1, "id": 1, "remaining": "1"},
        {"event": "done", "seq": 2, "id": 2, "reason": "rejected", "remaining": "2"},
        {"event": "trade", "seq": 3, "taker": 3, "maker": 1, "price": "10", "qty": "1"},
        {"event": "done", "seq": 4, "id": 1, "reason": "filled", "remaining": "0"},
        {"event": "done", "seq": 5, "id": 3, "reason": "expired", "remaining": "1"},
        {"event": "open", "seq": 6, "id": 4, "remaining": "1"},
        {"event": "open", "seq": 7, "id": 5, "remaining": "3"},
        {"event": "trade", "seq": 8, "taker": 6, "maker": 4, "price": "9", "qty": "1"},
        {"event": "done", "seq": 9, "id": 4, "reason": "filled", "remaining": "0"},
        {"event": "trade", "seq": 10, "taker": 6, "maker": 5, "price": "11", "qty": "1"},
        {"event": "done", "seq": 11, "id": 6, "reason": "filled", "remaining": "0", "funds_remaining": "5"},
    ]


@pytest.mark.parametrize("stp,expect", [
    ("none", ["trade", "done", "done"]),
    ("cancel_taker", ["done"]),
    ("cancel_maker", ["done", "open"]),
    ("cancel_both", ["done", "done"]),
])
def test_stp_flag(stp: str, expect: list[str]) -> None:
    out = _replay([
        '{"op":"limit","id":1,"user":1,"side":"sell","price":"10","qty":"1"}',
        '{"op":"limit","id":2,"user":1,"side":"buy","price":"10","qty":"1"}',
    ], stp=stp)
    assert [e["event"] for e in out[1:]] == expect


def test_bad_flags() -> None:
    with pytest.raises(ReplayError):
        parse_step("0", "tick")
    with pytest.raises(ReplayError):
        parse_step("abc", "lot")


def test_cli_end_to_end_exit_zero() -> None:
    stdin = "\n".join([
        '{"op":"limit","id":1,"user":7,"side":"buy","price":"100.25","qty":"0.5"}',
        "{broken",
        '{"op":"market","id":2,"user":8,"side":"sell","qty":"0.5"}',
    ]) + "\n"
    proc = subprocess.run([sys.executable, "-m", "coffer.cli", "matcher", "replay", "--tick", "0.01", "--lot",
                           "0.1"], input=stdin, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["event"] for e in events] == ["open", "error", "trade", "done", "done"]
    assert events[1] == {"event": "error", "seq": 2, "line": 2, "reason": events[1]["reason"]}
    bad = subprocess.run([sys.executable, "-m", "coffer.cli", "matcher", "replay", "--tick", "-1", "--lot", "1"],
                         input="", capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("coffer: error: --tick")
