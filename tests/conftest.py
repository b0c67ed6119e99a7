import os
import socket

import pytest
import torch

from baselines import BASELINES  # registers the baselines: tests run every method

torch.set_num_threads(2)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
__all__ = ["BASELINES"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing in tests touches the network: any connection attempt fails loudly."""

    def refuse(*args, **kwargs):
        raise RuntimeError("network access in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def pytest_collection_modifyitems(config, items):
    """torchrun and paper-tier parity tests are slow too, so `-m "not slow"` is the fast tier."""
    for item in items:
        if item.get_closest_marker("distributed") or item.get_closest_marker("paper"):
            item.add_marker(pytest.mark.slow)
