"""PEFT-format I/O checked against PEFT itself: deltas, round trip logits, canonical digests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

from adapterhub.errors import InvalidAdapterError, UnsupportedAdapterError
from adapterhub.lora import LoraAdapter, LoraModule
from tests.helpers import edit_adapter_config, edited_weights, make_peft_adapter, tiny_bert


def _peft_lora_layers(peft_model):
    from peft.tuners.lora import LoraLayer

    for name, module in peft_model.base_model.model.named_modules():
        if isinstance(module, LoraLayer):
            yield name, module


@pytest.mark.parametrize("use_rslora", [False, True])
def test_delta_equals_peft_get_delta_weight(tmp_path: Path, use_rslora: bool) -> None:
    peft_model, folder = make_peft_adapter(
        tmp_path / "a",
        use_rslora=use_rslora,
        rank_pattern={"layer.1.attention.self.value": 2},
        alpha_pattern={"query": 3.0},
    )
    adapter = LoraAdapter.load(folder)
    layers = dict(_peft_lora_layers(peft_model))
    assert sorted(layers) == adapter.module_paths
    assert adapter.ranks()["encoder.layer.1.attention.self.value"] == 2
    for path, layer in layers.items():
        expected = layer.get_delta_weight("default")
        torch.testing.assert_close(adapter.delta_weight(path), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_round_trip_logits_equal(tmp_path: Path, input_ids: torch.Tensor, use_rslora: bool) -> None:
    peft_model, folder = make_peft_adapter(
        tmp_path / "a", use_rslora=use_rslora, rank_pattern={"layer.0.attention.self.query": 2}
    )
    with torch.no_grad():
        expected = peft_model(input_ids).last_hidden_state
    adapter = LoraAdapter.load(folder)
    adapter.save(tmp_path / "out")
    reloaded = PeftModel.from_pretrained(tiny_bert(0), tmp_path / "out").eval()
    with torch.no_grad():
        got = reloaded(input_ids).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    # unknown config keys survive the round trip
    original = json.loads((folder / "adapter_config.json").read_text())
    written = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert written == original


def test_modules_to_save_kept_as_passthrough(tmp_path: Path, input_ids: torch.Tensor) -> None:
    peft_model, folder = make_peft_adapter(tmp_path / "a", modules_to_save=["pooler.dense"], target_modules=["query"])
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "modules_to_save" in name:
                p.add_(0.5)
        peft_model.save_pretrained(folder)
        expected = peft_model(input_ids).pooler_output
    adapter = LoraAdapter.load(folder)
    assert adapter.extra_tensor_names == ["pooler.dense.bias", "pooler.dense.weight"]
    adapter.save(tmp_path / "out")
    reloaded = PeftModel.from_pretrained(tiny_bert(0), tmp_path / "out").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids).pooler_output, expected, rtol=1e-6, atol=1e-6)


def test_fan_in_fan_out_delta_is_transposed(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=50, n_positions=32))
    peft_model = get_peft_model(
        model, LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    )
    peft_model.save_pretrained(tmp_path / "g")
    adapter = LoraAdapter.load(tmp_path / "g")
    layer = dict(_peft_lora_layers(peft_model))["h.0.attn.c_attn"]
    delta = adapter.delta_weight("h.0.attn.c_attn")
    assert delta.shape == (32, 96)  # Conv1D layout (d_in, d_out)
    torch.testing.assert_close(delta, layer.get_delta_weight("default"))
    assert adapter.module("h.0.attn.c_attn").delta().shape == (96, 32)


def test_digest_is_canonical(tmp_path: Path, peft_adapter_dir: Path) -> None:
    adapter = LoraAdapter.load(peft_adapter_dir)
    # same tensors written in another key order and with other metadata -> same digest
    tensors = load_file(peft_adapter_dir / "adapter_model.safetensors")
    other = tmp_path / "other"
    shutil.copytree(peft_adapter_dir, other)
    save_file(dict(reversed(list(tensors.items()))), other / "adapter_model.safetensors", metadata={"x": "y"})
    assert LoraAdapter.load(other).digest == adapter.digest
    # the canonical file we write hashes to the digest and reads back identically
    digest, size = adapter.write_weights(tmp_path / "canon.safetensors")
    import hashlib

    assert hashlib.sha256((tmp_path / "canon.safetensors").read_bytes()).hexdigest() == digest == adapter.digest
    assert size == (tmp_path / "canon.safetensors").stat().st_size
    reread = load_file(tmp_path / "canon.safetensors")
    assert reread.keys() == tensors.keys()
    for key in tensors:
        assert torch.equal(reread[key], tensors[key])
    # a change of one value changes the digest
    key = next(iter(tensors))
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] += 1
    save_file(tensors, other / "adapter_model.safetensors")
    assert LoraAdapter.load(other).digest != adapter.digest


def test_from_modules_round_trip_mixed_ranks(tmp_path: Path, input_ids: torch.Tensor) -> None:
    torch.manual_seed(0)
    base = tiny_bert(0)
    modules = {
        "encoder.layer.0.attention.self.query": LoraModule(torch.randn(3, 32), torch.randn(32, 3), 0.7),
        "encoder.layer.1.output.dense": LoraModule(torch.randn(5, 37), torch.randn(32, 5), 1.3),
    }
    adapter = LoraAdapter.from_modules(modules, base_model="tiny-bert")
    adapter.save(tmp_path / "m")
    loaded = LoraAdapter.load(tmp_path / "m")
    for path, module in modules.items():
        torch.testing.assert_close(loaded.module(path).delta(), module.delta(), rtol=1e-6, atol=1e-6)
    peft_model = PeftModel.from_pretrained(tiny_bert(0), tmp_path / "m").eval()
    # independent reference: add the deltas to the base weights by hand
    reference = tiny_bert(0)
    with torch.no_grad():
        for path, module in modules.items():
            reference.get_submodule(path).weight += module.delta()
        torch.testing.assert_close(peft_model(input_ids).last_hidden_state, reference(input_ids).last_hidden_state)
    del base


# ---------------------------------------------------------------- bad input


def test_truncated_safetensors(tmp_path: Path, peft_adapter_dir: Path) -> None:
    path = peft_adapter_dir / "adapter_model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(InvalidAdapterError, match="truncated"):
        LoraAdapter.load(peft_adapter_dir)


def test_missing_config(peft_adapter_dir: Path) -> None:
    (peft_adapter_dir / "adapter_config.json").unlink()
    with pytest.raises(InvalidAdapterError, match="no adapter_config.json"):
        LoraAdapter.load(peft_adapter_dir)


def test_config_rank_mismatch(peft_adapter_dir: Path) -> None:
    edit_adapter_config(peft_adapter_dir, rank_pattern={})
    with pytest.raises(InvalidAdapterError, match="config and tensors disagree"):
        LoraAdapter.load(peft_adapter_dir)


def test_config_target_mismatch(peft_adapter_dir: Path) -> None:
    edit_adapter_config(peft_adapter_dir, target_modules=["query"])
    with pytest.raises(InvalidAdapterError, match="not selected by target_modules"):
        LoraAdapter.load(peft_adapter_dir)


def test_wrong_shapes(peft_adapter_dir: Path) -> None:
    with edited_weights(peft_adapter_dir) as tensors:
        key = next(k for k in tensors if k.endswith("lora_B.weight"))
        tensors[key] = torch.randn(tensors[key].shape[0], tensors[key].shape[1] + 1)
    with pytest.raises(InvalidAdapterError, match=r"\(d_out, r\)"):
        LoraAdapter.load(peft_adapter_dir)


def test_missing_factor(peft_adapter_dir: Path) -> None:
    with edited_weights(peft_adapter_dir) as tensors:
        del tensors[next(k for k in tensors if k.endswith("lora_B.weight"))]
    with pytest.raises(InvalidAdapterError, match="no lora_B"):
        LoraAdapter.load(peft_adapter_dir)


def test_nan_weights(peft_adapter_dir: Path) -> None:
    with edited_weights(peft_adapter_dir) as tensors:
        tensors[next(iter(tensors))][0, 0] = float("nan")
    with pytest.raises(InvalidAdapterError, match="NaN"):
        LoraAdapter.load(peft_adapter_dir)


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_bin_with_code_payload_refused(tmp_path: Path, peft_adapter_dir: Path, capsys) -> None:
    (peft_adapter_dir / "adapter_model.safetensors").unlink()
    torch.save({"x": _Payload()}, peft_adapter_dir / "adapter_model.bin")
    with pytest.raises(InvalidAdapterError, match="pickled code is never executed"):
        LoraAdapter.load(peft_adapter_dir)
    assert "pwned" not in capsys.readouterr().out


def test_legacy_bin_of_tensors_is_read(tmp_path: Path, peft_adapter_dir: Path) -> None:
    expected = LoraAdapter.load(peft_adapter_dir).digest
    tensors = load_file(peft_adapter_dir / "adapter_model.safetensors")
    (peft_adapter_dir / "adapter_model.safetensors").unlink()
    torch.save(tensors, peft_adapter_dir / "adapter_model.bin")
    assert LoraAdapter.load(peft_adapter_dir).digest == expected


@pytest.mark.parametrize(
    "change, match",
    [
        ({"peft_type": "IA3"}, "LoRA adapters only"),
        ({"use_dora": True}, "DoRA"),
        ({"r": "eight"}, "positive number"),
    ],
)
def test_unsupported_or_bad_config(peft_adapter_dir: Path, change: dict, match: str) -> None:
    edit_adapter_config(peft_adapter_dir, **change)
    with pytest.raises((UnsupportedAdapterError, InvalidAdapterError), match=match):
        LoraAdapter.load(peft_adapter_dir)


def test_dora_tensors_refused(peft_adapter_dir: Path) -> None:
    with edited_weights(peft_adapter_dir) as tensors:
        tensors["base_model.model.encoder.layer.0.attention.self.query.lora_magnitude_vector"] = torch.ones(32)
    with pytest.raises(UnsupportedAdapterError, match="DoRA"):
        LoraAdapter.load(peft_adapter_dir)
