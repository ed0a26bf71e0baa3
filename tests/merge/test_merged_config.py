"""A merged adapter's config selects exactly the modules it carries, as its inputs' configs did."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from adapterhub.lora import LoraAdapter
from adapterhub.merge import merge_adapters
from tests.helpers import make_peft_adapter, tiny_bert


def _wrapped(model: torch.nn.Module) -> set[str]:
    return {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}


@pytest.mark.parametrize(
    "exclude", [["pooler.dense"], r".*pooler\.dense"], ids=["names", "regex"]
)
def test_merge_keeps_the_inputs_excludes(tmp_path: Path, exclude: object) -> None:
    config = {"target_modules": ["query", "dense"], "exclude_modules": exclude}
    folders = [make_peft_adapter(tmp_path / f"a{i}", seed=i, **config)[1] for i in range(2)]
    inputs = [LoraAdapter.load(f) for f in folders]
    merged = merge_adapters(inputs, "linear", weights=[0.5, 0.5]).adapter
    assert merged.config.exclude_modules == exclude
    merged.save(tmp_path / "merged")

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # PEFT warns about missing keys for extra modules
        loaded = PeftModel.from_pretrained(tiny_bert(0), tmp_path / "merged")
    original = PeftModel.from_pretrained(tiny_bert(0), folders[0])
    assert _wrapped(loaded) == _wrapped(original)
    assert not any("pooler" in name for name in _wrapped(loaded))


def test_an_exclude_that_would_drop_a_merged_module_is_not_carried(tmp_path: Path) -> None:
    with_pooler = make_peft_adapter(tmp_path / "p", seed=1, target_modules=["query", "dense"])[1]
    without = make_peft_adapter(tmp_path / "q", seed=2, target_modules=["query", "dense"], exclude_modules=["pooler.dense"])[1]
    merged = merge_adapters([LoraAdapter.load(with_pooler), LoraAdapter.load(without)], "cat").adapter
    assert merged.config.exclude_modules is None  # pooler.dense is in the merge: excluding it would lose it
    assert any(path.endswith("pooler.dense") for path in merged.module_paths)
