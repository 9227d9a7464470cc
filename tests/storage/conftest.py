"""Fixtures of the storage tests: one embedded ClickHouse engine, a database per test.

chDB hosts one engine path per process, so every storage test shares one path (package scope:
the engine is released when the storage tests are done, so other packages may use their own)
and gets its own database in it (``chdb://PATH?database=t_<hex>``), which keeps tests isolated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import config
from pipeline.storage import client as store
from pipeline.storage.migrate import migrate


@pytest.fixture(scope="package")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("pulse-chdb") / "ch"
    yield path
    store.release()


@pytest.fixture
def store_url(chdb_path: Path) -> str:
    return f"chdb://{chdb_path}?database=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store_settings(store_url: str) -> config.Settings:
    return config.load({"PULSE_CLICKHOUSE_URL": store_url})


@pytest.fixture
def ch(store_settings: config.Settings) -> Iterator[Any]:
    client = store.connect(store_settings)
    yield client
    with contextlib.suppress(Exception):
        client.command(f"DROP DATABASE IF EXISTS `{client.database}`")
    store.close_quietly(client)


@pytest.fixture
def migrated(ch: Any) -> Any:
    migrate(ch)
    return ch


@pytest.fixture
def sink_settings(pulse_settings: config.Settings, store_url: str) -> config.Settings:
    """The shared broker and a fresh topic prefix, with the shared engine's per-test database."""
    return dataclasses.replace(pulse_settings, clickhouse_url=store_url)
