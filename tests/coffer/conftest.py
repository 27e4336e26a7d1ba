"""Fixtures of the `coffer` command tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import make_tempdir


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A `coffer up --data-dir` of its own (its Redis and PostgreSQL data), removed afterwards."""
    path = make_tempdir("coffer-up-")
    yield path
    shutil.rmtree(path, ignore_errors=True)
