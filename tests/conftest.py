"""Shared test setup: keep every test's user data (tables, runs) in a temp folder."""

import os

# One thread per process: the models under test are tiny, and subprocess-heavy tests
# (supervisor, DDP, kill -9) would otherwise oversubscribe a 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_user_data(tmp_path_factory, monkeypatch):
    # Tables written by `advisor probe` default to $XDG_DATA_HOME/sovits-advisor.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
    # The tables' parse cache (probe/table.py): one per session, never the user's ~/.cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
    monkeypatch.delenv("SOVITS_ADVISOR_TABLES", raising=False)


def pytest_configure(config):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
