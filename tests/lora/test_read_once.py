"""An import reads each tensor once: structure at load, values while the canonical bytes stream."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterhub.errors import InvalidAdapterError
from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.lora.tensorfile import SafetensorsSource
from tests.helpers import edited_weights


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts every tensor read from a safetensors file, by key (the only way tensor data is read)."""
    counts: Counter[str] = Counter()
    original = SafetensorsSource.get

    def counting_get(self: SafetensorsSource, key: str) -> torch.Tensor:
        counts[key] += 1
        return original(self, key)

    monkeypatch.setattr(SafetensorsSource, "get", counting_get)
    return counts


def _poison(folder: Path, value: float, *, last: bool) -> str:
    """Put ``value`` in one tensor (the last or first in key order); returns that key."""
    with edited_weights(folder) as tensors:
        key = sorted(tensors)[-1 if last else 0]
        tensors[key].view(-1)[0] = value
    return key


def test_load_and_checked_stream_read_each_tensor_once(peft_adapter_dir: Path, reads: Counter[str]) -> None:
    adapter = LoraAdapter.load(peft_adapter_dir, validate=False)
    assert sum(reads.values()) == 0  # structure (keys, dtypes, shapes, ranks) comes from the header
    data = b"".join(adapter.iter_weights_bytes(check_values=True))
    keys = load_file(peft_adapter_dir / "adapter_model.safetensors").keys()
    assert reads == Counter({key: 1 for key in keys})
    # the stream is the canonical file, whose sha256 is the adapter's digest
    assert hashlib.sha256(data).hexdigest() == LoraAdapter.load(peft_adapter_dir).digest


def test_checked_write_reads_once_and_keeps_the_digest(
    tmp_path: Path, peft_adapter_dir: Path, reads: Counter[str]
) -> None:
    adapter = LoraAdapter.load(peft_adapter_dir, validate=False)
    digest, size = adapter.write_weights(tmp_path / "w.safetensors", check_values=True)
    assert set(reads.values()) == {1}
    assert adapter.digest_and_size == (digest, size)  # no second pass for the digest
    assert set(reads.values()) == {1}
    assert hashlib.sha256((tmp_path / "w.safetensors").read_bytes()).hexdigest() == digest


def test_validate_up_front_reads_everything_once_more(peft_adapter_dir: Path, reads: Counter[str]) -> None:
    """The counter does see a second pass: what ``validate=True`` costs when the bytes are streamed after."""
    adapter = LoraAdapter.load(peft_adapter_dir)
    assert set(reads.values()) == {1}
    b"".join(adapter.iter_weights_bytes())
    assert set(reads.values()) == {2}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("last", [True, False])
def test_non_finite_fails_mid_stream_with_the_validate_message(
    tmp_path: Path, peft_adapter_dir: Path, reads: Counter[str], value: float, last: bool
) -> None:
    bad_key = _poison(peft_adapter_dir, value, last=last)
    with pytest.raises(InvalidAdapterError) as up_front:
        LoraAdapter.load(peft_adapter_dir)
    assert f"tensor '{bad_key}' contains NaN or Inf values" in str(up_front.value)
    reads.clear()

    adapter = LoraAdapter.load(peft_adapter_dir, validate=False)  # structure alone is fine
    full_size = sum(len(chunk) for chunk in adapter.iter_weights_bytes())  # unchecked: complete
    reads.clear()
    received: list[bytes] = []
    with pytest.raises(InvalidAdapterError) as streamed:
        for chunk in adapter.iter_weights_bytes(check_values=True):
            received.append(chunk)
    assert str(streamed.value) == str(up_front.value)
    assert sum(len(chunk) for chunk in received) < full_size  # never a complete byte stream
    assert reads[bad_key] == 1 and max(reads.values()) == 1  # stopped at the bad tensor, read once

    target = tmp_path / "out" / "adapter_model.safetensors"
    with pytest.raises(InvalidAdapterError, match="contains NaN or Inf values"):
        adapter.write_weights(target, check_values=True)
    assert list(target.parent.iterdir()) == []  # neither the file nor a temp file is left


def test_in_memory_adapter_checked_on_stream() -> None:
    B = torch.ones(3, 2)
    B[1, 1] = float("nan")
    adapter = LoraAdapter.from_modules({"layer.q": LoraModule(torch.ones(2, 4), B, 1.0)}, base_model=None)
    with pytest.raises(InvalidAdapterError) as up_front:
        adapter.validate()
    with pytest.raises(InvalidAdapterError) as streamed:
        b"".join(adapter.iter_weights_bytes(check_values=True))
    assert str(streamed.value) == str(up_front.value)
    assert "base_model.model.layer.q.lora_B.weight" in str(streamed.value)
    b"".join(adapter.iter_weights_bytes())  # unchecked streams (engine outputs, export) behave as before


def test_unsupported_dtype_refused_at_load(tmp_path: Path, peft_adapter_dir: Path) -> None:
    """A dtype the canonical writer cannot store is a structure error: found at load, not mid-import."""
    tensors = load_file(peft_adapter_dir / "adapter_model.safetensors")
    tensors["base_model.model.pooler.dense.weight"] = torch.zeros(2, 2, dtype=torch.complex64)
    (peft_adapter_dir / "adapter_model.safetensors").unlink()
    torch.save(tensors, peft_adapter_dir / "adapter_model.bin")
    with pytest.raises(InvalidAdapterError, match="unsupported dtype"):
        LoraAdapter.load(peft_adapter_dir, validate=False)
