"""Shared fixtures of ``tests/transfer/test_engine.py`` and ``tests/transfer/test_generate_and_mpnet.py``
(imported by name into each; not a conftest, so ``tests/transfer/test_real_pipeline.py`` is unaffected)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread_module() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
