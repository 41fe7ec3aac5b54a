"""Fixtures of the data tests."""
import pytest


@pytest.fixture
def derived_cache(tmp_path_factory, monkeypatch):
    """Files derived at registration (seg_d2.data.derived) go to a fresh folder, not the user's cache.
    Only seg_d2.data.derived reads SEG_D2_DATA_DIR at each call; the built-in data keep their folder."""
    monkeypatch.setenv("SEG_D2_DATA_DIR", str(tmp_path_factory.mktemp("seg_d2_data")))
