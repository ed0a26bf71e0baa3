"""Fixtures shared by every test folder (offline, CPU, seeded). What they build comes from
``tests/helpers.py``; import functions from there, not from this file."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import Live, live_hub, make_peft_adapter, online_env, postgres_admin_url, sample_input_ids

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def shared_base_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One dequantised-SmolLM2 cache for the whole session (built once, ~20 s and ~540 MB), however
    many fresh homes the tests make; removed at the end unless ``ADAPTERHUB_BASES`` was set already
    (then that cache is reused and kept, e.g. a developer's warm one)."""
    preset = os.environ.get("ADAPTERHUB_BASES")
    if preset:
        yield Path(preset)
        return
    root = tmp_path_factory.mktemp("bases")
    os.environ["ADAPTERHUB_BASES"] = str(root)
    try:
        yield root
    finally:
        os.environ.pop("ADAPTERHUB_BASES", None)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; on a busy machine more threads oversubscribe (50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def peft_adapter_dir(tmp_path: Path) -> Path:
    """A PEFT adapter on the tiny BERT, one module at a lower rank (``rank_pattern``)."""
    _, folder = make_peft_adapter(tmp_path / "adapter", rank_pattern={"layer.1.attention.self.value": 2})
    return folder


@pytest.fixture
def input_ids() -> torch.Tensor:
    return sample_input_ids()


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[object]:
    """An AUTOCOMMIT engine on the PostgreSQL admin database (skips the test without one)."""
    from sqlalchemy import create_engine

    engine = create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


# -- the live hub server (tests/hub, tests/server) --------------------------------------------------


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Online huggingface_hub clients (against loopback only) for the rest of the test module:
    module-scoped fixtures push and pull too."""
    with pytest.MonkeyPatch.context() as mp:
        online_env(mp, tmp_path_factory.mktemp("hf-cache"))
        yield


@pytest.fixture(scope="module")
def live(online: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One real uvicorn server per test module on a free loopback port, clients online."""
    with live_hub(tmp_path_factory.mktemp("server-home")) as server:
        yield server


# -- object storage (tests/store/test_object_blobs.py, tests/hub/test_bucket_hub.py) ---------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API server: CI's (``ADAPTERHUB_TEST_S3_ENDPOINT``) or one started for the session."""
    from tests.s3helpers import endpoint_from_env, moto_server

    endpoint = endpoint_from_env()
    if endpoint is not None:
        yield endpoint
        return
    with moto_server() as started:
        yield started


@pytest.fixture
def s3_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://<fresh bucket>/blobs`` with obstore's ``AWS_*`` variables set for the test."""
    from tests.s3helpers import s3_env

    return s3_env(monkeypatch, s3_endpoint)
