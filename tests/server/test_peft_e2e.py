"""PEFT loads adapters straight from ``adapterhub serve`` (``HF_ENDPOINT``) with the exact logits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, constants
from peft import PeftModel
from safetensors.torch import load_file

from tests.helpers import make_peft_adapter, tiny_bert


# A fresh interpreter: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported.
SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from peft import PeftModel
    from safetensors.torch import save_file
    from tests.helpers import sample_input_ids, tiny_bert

    model = PeftModel.from_pretrained(tiny_bert(0), sys.argv[1]).eval()
    with torch.no_grad():
        save_file({"out": model(input_ids=sample_input_ids()).last_hidden_state.contiguous()}, sys.argv[2])
    """
)


def logits_from_hub(url: str, repo_id: str, tmp_path: Path) -> torch.Tensor:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_OFFLINE"))}
    env.update(HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_PROGRESS_BARS="1")
    out = tmp_path / "out.safetensors"
    subprocess.run(
        [sys.executable, "-c", SCRIPT, repo_id, str(out)],
        env=env,
        check=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    return load_file(out)["out"]


def local_logits(folder: Path, input_ids: torch.Tensor) -> torch.Tensor:
    model = PeftModel.from_pretrained(tiny_bert(0), folder).eval()
    with torch.no_grad():
        return model(input_ids=input_ids).last_hidden_state


@pytest.mark.slow
def test_peft_from_pretrained_through_the_server(live, tmp_path, input_ids):
    with pytest.MonkeyPatch.context() as mp:  # PEFT's save looks up the base model on the hub: stay offline
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        peft_model, folder = make_peft_adapter(tmp_path / "peft", seed=7, rank_pattern={"layer.1.attention.self.value": 2})
    with torch.no_grad():
        reference = peft_model(input_ids=input_ids).last_hidden_state
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo("acme/peft-e2e")
    api.upload_folder(repo_id="acme/peft-e2e", folder_path=str(folder))
    exported = live.hub.export("acme/peft-e2e", tmp_path / "exported")

    from_hub = logits_from_hub(live.url, "acme/peft-e2e", tmp_path)
    from_export = local_logits(exported, input_ids)
    assert torch.equal(from_hub, from_export)
    torch.testing.assert_close(from_hub, reference, rtol=0, atol=1e-6)
    assert not torch.allclose(from_hub, local_logits_base(input_ids), atol=1e-3)  # the adapter does something


def local_logits_base(input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return tiny_bert(0)(input_ids=input_ids).last_hidden_state
