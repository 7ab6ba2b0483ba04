"""Shared test settings: strict JAX, tiny images, the repository's example case."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
import pytest

# Several host devices so sharding tests run on a CPU-only machine; must precede JAX's
# backend initialisation (nothing has touched a device at import time).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
jax.config.update("jax_numpy_rank_promotion", "raise")

ROOT = Path(__file__).resolve().parents[1]
CASE1 = ROOT / "jaxblend" / "examples" / "case1"


@pytest.fixture(scope="session", autouse=True)
def _compile_cache_in_tmp(tmp_path_factory):
    """CLI runs in the tests keep their compilation cache in a temporary folder, not ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXBLEND_CACHE_DIR", str(tmp_path_factory.mktemp("xla-cache")))
        yield


@pytest.fixture(scope="session")
def case1() -> Path:
    return CASE1


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
