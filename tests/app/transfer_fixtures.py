"""Shared fixtures and helpers of ``tests/app/test_transfer.py`` and ``tests/app/test_transfer_inputs.py``.

The base registry is replaced by tiny random models standing in for MiniLM (a tiny BERT, seed 0), MPNet
(a tiny BERT, seed 1) and SmolLM2 (a tiny random Llama), each with the real model id. The pytest
fixtures here are imported by name into each test module (not put in ``tests/app/conftest.py``, which
other tests use).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from adapterhub.models import bases
from tests.helpers import store_state

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MPNET = "sentence-transformers/all-mpnet-base-v2"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TASK = "wn_adj_kind"  # the smallest shipped task
SOURCE = "acme/adj"
SMALL = dict(samples=6, max_candidates=24, epochs=1)  # a transfer in well under a second on the tiny models
CLI_SMALL = ("--samples", "6", "--max-candidates", "24", "--epochs", "1")


# -- fixtures ---------------------------------------------------------------------------------------------


class FakeBases:
    """The tiny stand-ins, built once per test (a loader returns the same object on every call, as the
    real cached loaders do); ``loads`` counts loader calls per base."""

    def __init__(self) -> None:
        self.models: dict[str, Any] = {}
        self.loads: dict[str, int] = {}
        self.missing: set[str] = set()  # bases whose package is "not installed"

    def _get(self, name: str) -> Any:
        from adapterhub.models.base import BaseModelNotFoundError, tiny_random_bert
        from adapterhub.models.causal import tiny_random_llama

        self.loads[name] = self.loads.get(name, 0) + 1
        if name in self.missing:
            raise BaseModelNotFoundError(SMOLLM2 if name == "smollm2" else name, "its package is not installed")
        if name not in self.models:
            if name == "minilm":
                self.models[name] = dataclasses.replace(tiny_random_bert(seed=0), base_model_id=MINILM)
            elif name == "mpnet":
                self.models[name] = dataclasses.replace(tiny_random_bert(seed=1), base_model_id=MPNET)
            else:
                lm = tiny_random_llama()
                lm.base_model_id = SMOLLM2
                self.models[name] = lm
        return self.models[name]

    def registry(self) -> dict[str, bases.BaseSpec]:
        from adapterhub.models.causal import LLAMA_TARGET_MODULES
        from adapterhub.models.lora_layers import DEFAULT_EXCLUDE_MODULES, DEFAULT_TARGET_MODULES

        return {
            "minilm": bases.BaseSpec("minilm", MINILM, "encoder", DEFAULT_TARGET_MODULES, DEFAULT_EXCLUDE_MODULES, None,
                                     lambda: self._get("minilm"), "tiny MiniLM stand-in"),
            "mpnet": bases.BaseSpec("mpnet", MPNET, "encoder", ("query", "key", "value", "dense"),
                                    DEFAULT_EXCLUDE_MODULES, None, lambda: self._get("mpnet"), "tiny MPNet stand-in"),
            "smollm2": bases.BaseSpec("smollm2", SMOLLM2, "causal_lm", LLAMA_TARGET_MODULES, (), "CAUSAL_LM",
                                      lambda: self._get("smollm2"), "tiny SmolLM2 stand-in"),
        }


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeBases:
    fakes = FakeBases()
    monkeypatch.setattr(bases, "_registry", fakes.registry)
    return fakes


@pytest.fixture
def hub(home: Path, fake: FakeBases):
    """A hub in the CLI's home holding ``acme/adj``: a 2-step LoRA for ``wn_adj_kind`` on the MiniLM stand-in."""
    from adapterhub.app import AdapterHub
    from adapterhub.models.train import train_adapter

    with AdapterHub(home) as h:
        trained = train_adapter(fake._get("minilm"), TASK, max_steps=2, rank=4, alpha=8, batch_size=8, seed=0)
        h.add_adapter(trained.adapter, SOURCE, task=TASK)
        yield h


def _texts_file(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture
def train_texts() -> list[str]:
    from adapterhub.tasks import load_task

    return load_task(TASK).texts("train")[:16]


@pytest.fixture
def data_file(tmp_path: Path, train_texts: list[str]) -> Path:
    return _texts_file(tmp_path / "data.jsonl", train_texts)


@pytest.fixture
def seeds() -> list[str]:
    return ["very large in size", "relating to the sea", "having been broken", "of a bright colour",
            "made by hand"]


@pytest.fixture
def seeds_file(tmp_path: Path, seeds: list[str]) -> Path:
    return _texts_file(tmp_path / "seeds.jsonl", seeds)


def _prepare(hub, data_file: Path) -> dict[str, Any]:
    from adapterhub.app.transfer_kit import prepare

    return prepare(hub, SOURCE, data=data_file, max_real=16)


def _artifact_rows(home: Path) -> list[tuple]:
    from adapterhub.app import AdapterHub

    with AdapterHub(home) as h, h.catalog.reading() as reader:
        return sorted(tuple(r) for r in reader.rows("SELECT kind, key, digest FROM artifacts", {}))


def _state(home: Path) -> tuple:
    """Everything a failed command must leave as it was: entries, blob files, revisions, artifact rows,
    hub repo rows."""
    from adapterhub.app import AdapterHub
    from adapterhub.store import hub_catalog

    with AdapterHub(home) as h:
        repos = sorted((r.name, r.private) for r in hub_catalog.list_repos(h.catalog))
    return store_state(home), _artifact_rows(home), repos
