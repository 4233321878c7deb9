"""Shared test setup: keep every test's user data (tables, runs) in a temp folder."""

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_user_data(tmp_path_factory, monkeypatch):
    # Tables written by `advisor probe` default to $XDG_DATA_HOME/sovits-advisor.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
    monkeypatch.delenv("SOVITS_ADVISOR_TABLES", raising=False)


def pytest_configure(config):
    # 2-core CI machine: do not oversubscribe threads across subprocesses.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
