"""The one place for what tests build: random adapters, tiny models, synthetic data, catalog states,
PostgreSQL test databases and a live hub server. Everything is seeded, offline and on the CPU.

Pytest fixtures that wrap these live in ``tests/conftest.py`` (shared) or in a folder's conftest
(used by that folder only); tests import the plain functions from here, never from a conftest.
Benchmarks (``bench/``) do not import this module, and no test imports a benchmark.

Sections: random adapters; tiny models and PEFT adapters; editing adapter folders; dense
references for merges; synthetic tasks; catalog and store state; PostgreSQL; a live server.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from adapterhub.lora import AdapterConfig, LoraAdapter, LoraModule
from adapterhub.lora.keys import lora_key
from adapterhub.lora.tensorfile import DictSource
from adapterhub.tasks import Example, Label, Task

# -- random adapters -------------------------------------------------------------------------------


def random_adapter(
    seed: int = 0,
    *,
    rank: int = 2,
    base_model: str = "tiny-bert",
    layers: int = 2,
    d: int = 32,
) -> LoraAdapter:
    """A rank-``rank`` adapter on BERT-shaped query/value modules with random factors (scale 0.5)."""
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for layer in range(layers):
        for name in ("query", "value"):
            path = f"encoder.layer.{layer}.attention.self.{name}"
            modules[path] = LoraModule(torch.randn(rank, d, generator=g), torch.randn(d, rank, generator=g), 0.5)
    return LoraAdapter.from_modules(modules, base_model=base_model)


def write_random_adapter(folder: Path, seed: int = 0, **kwargs: Any) -> Path:
    """Save ``random_adapter(seed, **kwargs)`` as a PEFT folder; returns the folder."""
    random_adapter(seed, **kwargs).save(folder)
    return folder


def random_adapter_for(
    model: nn.Module,
    seed: int,
    *,
    rank: int = 3,
    std: float = 0.3,
    scale: float = 0.7,
    only: Sequence[str] | None = None,
    base_model: str = "adapterhub/tiny-random-bert",
) -> LoraAdapter:
    """Random non-zero factors (``std`` times N(0, 1)) on every linear layer adapterhub targets in
    ``model`` (or on the paths in ``only``), each with the folded ``scale``."""
    from adapterhub.models.lora_layers import find_target_linears

    g = torch.Generator().manual_seed(seed)
    modules = {}
    for path in only or find_target_linears(model):
        layer = model.get_submodule(path)
        modules[path] = LoraModule(
            torch.randn(rank, layer.in_features, generator=g) * std,
            torch.randn(layer.out_features, rank, generator=g) * std,
            scale,
        )
    return LoraAdapter.from_modules(modules, base_model=base_model)


TOY_SHAPES = {"layer.0.q": (24, 16), "layer.0.v": (24, 16), "layer.0.up": (40, 16), "layer.1.q": (24, 16)}


def toy_adapter(
    seed: int,
    *,
    r: int = 4,
    alpha: float = 8.0,
    paths: Sequence[str] = ("layer.0.q", "layer.0.v", "layer.0.up"),
    base_model: str | None = "base",
    use_rslora: bool = False,
    dtype: torch.dtype = torch.float32,
    extra: dict[str, torch.Tensor] | None = None,
) -> LoraAdapter:
    """An in-memory adapter on the ``TOY_SHAPES`` modules with PEFT semantics: the config keeps
    ``alpha`` and ``r`` (scale alpha/r or alpha/sqrt(r), not folded into the factors); ``extra``
    tensors are passthrough (modules_to_save) tensors."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for path in paths:
        d_out, d_in = TOY_SHAPES[path]
        tensors[lora_key(path, "A")] = torch.randn(r, d_in, generator=g).to(dtype)
        tensors[lora_key(path, "B")] = torch.randn(d_out, r, generator=g).to(dtype)
    for name, tensor in (extra or {}).items():
        tensors[f"base_model.model.{name}"] = tensor
    raw = {
        "peft_type": "LORA",
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": alpha,
        "target_modules": sorted({p.rsplit(".", 1)[-1] for p in paths}),
        "use_rslora": use_rslora,
        "modules_to_save": sorted({n.rsplit(".", 1)[0] for n in extra}) if extra else None,
    }
    return LoraAdapter(AdapterConfig(raw), DictSource(tensors))


# -- tiny models and real PEFT adapters on them ----------------------------------------------------


def tiny_bert_config():  # type: ignore[no-untyped-def]
    """A BertConfig small enough for unit tests (vocabulary 99, width 32, two layers)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )


def tiny_bert(seed: int = 0):  # type: ignore[no-untyped-def]
    """A tiny random transformers ``BertModel`` (deterministic for a seed), in eval mode."""
    from transformers import BertModel

    torch.manual_seed(seed)
    return BertModel(tiny_bert_config()).eval()


def sample_input_ids() -> torch.Tensor:
    """A fixed batch of 3 token sequences of length 11 for ``tiny_bert``."""
    torch.manual_seed(123)
    return torch.randint(0, 99, (3, 11))


def make_peft_adapter(
    folder: Path,
    *,
    seed: int = 0,
    r: int = 4,
    alpha: float = 8,
    use_rslora: bool = False,
    rank_pattern: dict | None = None,
    alpha_pattern: dict | None = None,
    target_modules: Sequence[str] = ("query", "value", "dense"),
    modules_to_save: Sequence[str] | None = None,
    base_model: str = "tiny-bert",
    **config: Any,
):  # type: ignore[no-untyped-def]
    """Save a PEFT LoRA adapter on ``tiny_bert(0)`` with random (non-zero) factors, made by PEFT
    itself; further ``LoraConfig`` fields (e.g. ``exclude_modules``) pass through ``config``.
    Returns ``(peft_model, folder)``."""
    from peft import LoraConfig, get_peft_model

    model = tiny_bert(0)
    lora_config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=list(target_modules),
        use_rslora=use_rslora,
        rank_pattern=rank_pattern or {},
        alpha_pattern=alpha_pattern or {},
        modules_to_save=modules_to_save,
        init_lora_weights=False,
        **config,
    )
    peft_model = get_peft_model(model, lora_config)
    torch.manual_seed(seed + 1000)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.2)
    peft_model.peft_config["default"].base_model_name_or_path = base_model
    peft_model.save_pretrained(folder)
    return peft_model.eval(), folder


# -- editing adapter folders (to make broken ones) -------------------------------------------------


def edit_adapter_config(folder: Path, **changes: Any) -> None:
    """Rewrite ``folder/adapter_config.json`` with ``changes`` applied."""
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@contextmanager
def edited_weights(folder: Path) -> Iterator[dict[str, torch.Tensor]]:
    """Yield ``folder/adapter_model.safetensors`` as a dict; what it holds after the block is saved."""
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    yield tensors
    save_file(tensors, path)


# -- dense references for merges (independent of adapterhub.merge) ---------------------------------


def dense_sum(adapters: Sequence[LoraAdapter], weights: Sequence[float], path: str) -> torch.Tensor:
    """``sum_i w_i s_i B_i A_i`` in float64, from the raw config (alpha/r) and tensors."""
    total = None
    for adapter, w in zip(adapters, weights):
        if path not in adapter.module_paths:
            continue
        m = adapter.module(path)
        r = m.rank
        alpha = adapter.config.alpha_for(path)
        scale = alpha / r**0.5 if adapter.config.use_rslora else alpha / r
        term = w * scale * (m.B.double() @ m.A.double())
        total = term if total is None else total + term
    assert total is not None
    return total


def dense_delta(adapter: LoraAdapter, path: str) -> torch.Tensor:
    """``s B A`` of one module in float64."""
    m = adapter.module(path)
    return m.scale * (m.B.double() @ m.A.double())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative Frobenius distance ``||a - b|| / ||b||``."""
    return float((a.double() - b.double()).norm() / b.double().norm())


# -- synthetic tasks for the tiny random BERT ------------------------------------------------------

WORDS = {
    "fruit": ["apple", "pear", "plum", "grape", "melon", "lemon"],
    "tool": ["hammer", "saw", "drill", "wrench", "chisel", "file"],
    "weather": ["rain", "snow", "wind", "storm", "fog", "hail"],
}


def word_task(words: Mapping[str, Sequence[str]], name: str, description: str, *, n_per_class: int = 24,
              seed: int = 0) -> Task:
    """One class per key of ``words``; each text is four words of its class. Splits 2:1:1 per class."""
    rng = random.Random(seed)
    labels = tuple(Label(label, f"{label}: {' '.join(vocab[:3])}") for label, vocab in words.items())
    examples = []
    for c, (label, vocab) in enumerate(words.items()):
        for i in range(n_per_class):
            text = " ".join(rng.choice(vocab) for _ in range(4))
            split = "train" if i < n_per_class // 2 else "validation" if i < 3 * n_per_class // 4 else "test"
            examples.append(Example(f"{label}-{i}", text, c, split))
    return Task(name, description, labels, "generated", "CC0", tuple(examples))


def synthetic_task(n_per_class: int = 24, seed: int = 0) -> Task:
    """Three classes (fruit, tool, weather): classes differ by the words they use."""
    return word_task(WORDS, "synthetic", "word-class toy task", n_per_class=n_per_class, seed=seed)


# -- catalog and store state -----------------------------------------------------------------------


def fake_digest(seed: str) -> str:
    """A well-formed digest for catalog rows that need no blob."""
    return hashlib.sha256(seed.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed here (not by adapterhub) to check what it stores and serves."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class CallLog:
    """An ASGI wrapper recording each request's method, path and Content-Length (which routes a
    real client called, and how much it sent)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[tuple[str, str, int]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"0")
            self.calls.append((scope["method"], scope["path"], int(length or 0)))
        await self.app(scope, receive, send)

    def take(self) -> list[tuple[str, str, int]]:
        calls, self.calls = self.calls, []
        return calls


def staging_folders(home: Path) -> list[Path]:
    """Commit staging folders left under the home's uploads (received LFS objects and Xet xorbs
    live beside them and are not staging)."""
    return list((Path(home) / "uploads").glob(".upload-*"))


def store_state(home: Path) -> tuple[list[str], list[str], list[tuple[str, int]]]:
    """What a home holds: (catalog names, blob files, (name, revision count) pairs).

    Opened read-only in spirit: a fresh facade, closed at once.
    """
    from adapterhub.app import AdapterHub

    with AdapterHub(home) as hub:
        names = [r.name for r in hub.list()]
        revisions = [(n, len(hub.catalog.revisions(n))) for n in names]
    root = home / "blobs"
    blobs = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return names, blobs, revisions


# -- PostgreSQL test databases ---------------------------------------------------------------------

PG_ENV = "ADAPTERHUB_TEST_POSTGRES_URL"


def postgres_admin_url() -> str:
    """The admin URL from ``ADAPTERHUB_TEST_POSTGRES_URL``. Without it the test is skipped, except
    under ``CI``, where it fails: CI starts a real server and must not silently test less."""
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(
                f"{PG_ENV} is not set but CI is: the PostgreSQL tests must run in CI "
                "(start a server with scripts/start_postgres.sh and export its URL)",
                pytrace=False,
            )
        pytest.skip(f"{PG_ENV} not set; run scripts/start_postgres.sh and export its URL to test PostgreSQL")
    return url


@contextmanager
def postgres_database(admin: Any) -> Iterator[str]:
    """CREATE a uniquely named database with the ``admin`` engine (AUTOCOMMIT), yield its URL, and
    DROP it afterwards (closing stray connections)."""
    import uuid

    from sqlalchemy import text

    name = f"adapterhub_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- a live hub server on loopback -----------------------------------------------------------------

MAX_UPLOAD = 256 * 1024  # the live server's upload limit: small, so the oversize cases are cheap


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app: Any, *, port: int | None = None) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on 127.0.0.1:<port> (default: a free one) in a background
    thread; yields the base URL; stops the server after."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port or free_port(), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="adapterhub-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def wait_until_serving(url: str, proc: subprocess.Popen, *, timeout: float = 60) -> None:
    """Poll ``url`` until it answers 200; fails if ``proc`` (the server process) exits first."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, f"no server came up at {url}"
        time.sleep(0.1)


@dataclass
class Live:
    """A running server: its URL, its facade and home, a write token and a read-only token."""

    url: str
    hub: Any  # AdapterHub
    home: Path
    token: str
    read_token: str


@contextmanager
def live_hub(home: Path, *, max_upload_bytes: int = MAX_UPLOAD, read_token_required: bool = False) -> Iterator[Live]:
    """A fresh home served by ``adapterhub.server.create_app`` on loopback, with an admin write token
    and an admin read-only token; the facade is closed after the server stops."""
    from adapterhub.app import AdapterHub
    from adapterhub.server import create_app

    hub = AdapterHub(home)
    try:
        # the operator's tokens (admin: every namespace); tests/security makes owned ones
        token = hub.create_token(name="writer", admin=True)["token"]
        read_token = hub.create_token(name="reader", write=False, admin=True)["token"]
        app = create_app(hub, max_upload_bytes=max_upload_bytes, read_token_required=read_token_required)
        with live_server(app) as url:
            yield Live(url, hub, home, token, read_token)
    finally:
        hub.close()


def online_env(monkeypatch: Any, cache: Path) -> None:
    """Let huggingface_hub reach a loopback server (tests/conftest.py sets offline mode), with its
    cache in ``cache``, and nothing falling back to the real Hub."""
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Anything that falls back to the default endpoint fails at once on loopback, never the internet.
    # (hf_hub_url swaps an explicit endpoint in for the ENDPOINT prefix of the template: patch both.)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
