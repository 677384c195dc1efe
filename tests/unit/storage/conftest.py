from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.storage import Store

from .helpers import open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path / "data")
    yield s
    s.close()
