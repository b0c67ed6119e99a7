import os
import random
import socket

import numpy as np
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


@pytest.fixture(autouse=True)
def process_state():
    """Nothing process-wide carries from one test to the next: what a test (or a command's ``main`` it calls) sets of
    threads, RNG streams, dtype, grad mode, determinism and matmul precision is put back afterwards."""
    saved = (torch.get_num_threads(), torch.get_rng_state(), np.random.get_state(), random.getstate(),
             torch.get_default_dtype(), torch.is_grad_enabled(), torch.are_deterministic_algorithms_enabled(),
             torch.get_float32_matmul_precision())
    yield
    threads, rng, np_rng, py_rng, dtype, grad, deterministic, matmul = saved
    torch.set_num_threads(threads)
    torch.set_rng_state(rng)
    np.random.set_state(np_rng)
    random.setstate(py_rng)
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)
    torch.use_deterministic_algorithms(deterministic)
    torch.set_float32_matmul_precision(matmul)


def pytest_addoption(parser):
    parser.addoption("--order", default="file", help="test order: file (as collected), reverse, or shuffle:SEED; "
                     "the suite must pass in any")


def pytest_collection_modifyitems(config, items):
    """torchrun and paper-tier parity tests are slow too, so `-m "not slow"` is the fast tier."""
    for item in items:
        if item.get_closest_marker("distributed") or item.get_closest_marker("paper"):
            item.add_marker(pytest.mark.slow)
    order = config.getoption("--order")
    if order == "reverse":
        items.reverse()
    elif order.startswith("shuffle:"):
        random.Random(int(order.split(":", 1)[1])).shuffle(items)
    elif order != "file":
        raise pytest.UsageError(f"--order: expected file, reverse or shuffle:SEED, got {order!r}")
