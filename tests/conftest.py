"""Shared test fixtures (kept free of torch imports: some tests check torch-free imports)."""

from __future__ import annotations

import os
from typing import Any

# GPU kernels run in Numba's CUDA simulator (on the CPU) unless the caller chose otherwise;
# this must be set before anything imports numba.cuda.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest


@pytest.fixture
def tiny_config():
    """Factory for a resolved tiny-ViT (32 px, patch 8, depth 2) supervised config."""
    from pretrain.engine.config import resolve_config

    def make(task: Any = None, **overrides: Any) -> dict[str, Any]:
        if task is None:
            from pretrain.supervised import SupervisedTask

            task = SupervisedTask()
        base = {"log_every": 1, "seed": 0, "device": "cpu", "amp": "none", "workers": 0}
        return resolve_config(task.defaults, "tiny-cpu", {**base, **overrides}, task.name)

    return make


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the test: the test machine's cores are shared."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
