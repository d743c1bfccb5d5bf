"""Fixtures for the curation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.http_server import ImageServer


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    """A fresh loopback HTTP server per test (hit counts and the flaky route start at zero)."""
    with ImageServer() as server:
        yield server
