"""A packed adapter is served by the hub routes as its reconstruction: huggingface_hub downloads and
``adapterhub pull`` get the catalog's digest, though no blob of it is stored until asked for."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import hf_hub_download

from adapterhub.app import AdapterHub
from tests.helpers import file_sha256, random_adapter


def test_packed_weights_download_and_pull_through_a_live_server(live, tmp_path):
    hub = live.hub
    for i in range(3):
        hub.add_adapter(random_adapter(20 + i, rank=4, base_model="served-base"), f"packed/s{i}")
    originals = {f"packed/s{i}": hub.get(f"packed/s{i}").digest for i in range(3)}
    hub.shard_pack("served-base", pool_size=2)
    for name, original in originals.items():
        digest = hub.get(name).digest
        assert digest != original and not hub.blobs.has(digest) and not hub.blobs.has(original)
        path = hf_hub_download(name, "adapter_model.safetensors", endpoint=live.url, cache_dir=str(tmp_path / "cache"))
        assert file_sha256(Path(path)) == digest
    with AdapterHub(tmp_path / "other-home") as other:
        record = other.pull("packed/s1", endpoint=live.url)
        assert record.digest == hub.get("packed/s1").digest
        assert other.verify() == {"missing": [], "corrupt": []}
