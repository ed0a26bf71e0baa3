"""``adapterhub transfer``'s input checks: the CLI's bad input (one line on stderr, exit 1 or 2,
nothing written), ``read_texts_file``/``read_seeds`` bounds, ``kit_from_bytes`` refusals and
``prepare`` refusals. The end-to-end, lineage, privacy, unfiltered and train tests are
``tests/app/test_transfer.py``'s; the shared fixtures are ``tests/app/transfer_fixtures.py``'s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapterhub.errors import InvalidAdapterError, InvalidParameterError
from tests.app.transfer_fixtures import (  # noqa: F401  (pytest fixtures are imported by name)
    CLI_SMALL,
    MINILM,
    SOURCE,
    TASK,
    _prepare,
    _state,
    _texts_file,
    data_file,
    fake,
    hub,
    seeds,
    seeds_file,
    train_texts,
)
from tests.helpers import random_adapter

pytestmark = pytest.mark.usefixtures("one_thread")


# -- 2. the kit artifact: what is not a kit ------------------------------------------------------------


def _safetensors(metadata: dict[str, str] | None) -> bytes:
    import torch
    from safetensors.torch import save

    return save({"x": torch.zeros(2)}, metadata=metadata)


@pytest.mark.parametrize("data", [
    b"",
    b"garbage, not a safetensors file",
    b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!",
    b"\xff" * 64,
    _safetensors(None),  # no metadata
    _safetensors({"format": "pt"}),  # metadata, but not the kit's key
    _safetensors({"adapterhub.transfer_kit": "{not json"}),
    _safetensors({"adapterhub.transfer_kit": json.dumps({"task": TASK})}),  # no seeds, no config
    _safetensors({"adapterhub.transfer_kit": json.dumps({"seeds": ["a"], "config": [1, 2]})}),
], ids=["empty", "garbage", "header-not-json", "huge-header-length", "no-metadata", "other-metadata",
        "meta-not-json", "meta-missing-fields", "config-not-a-mapping"])
def test_kit_from_bytes_refuses_what_is_not_a_kit(data: bytes):
    from adapterhub.app.transfer_kit import kit_from_bytes

    with pytest.raises(InvalidAdapterError):
        kit_from_bytes(data)


def test_kit_from_bytes_refuses_a_kit_whose_discriminator_is_not_a_valid_adapter(hub, data_file):
    from adapterhub.app.transfer_kit import find_kit, kit_from_bytes, kit_to_bytes

    _prepare(hub, data_file)
    kit, meta = find_kit(hub, hub.get(SOURCE))
    config = dict(meta["config"], r=meta["config"]["r"] + 3)  # the tensors no longer match the config
    data = _safetensors({"adapterhub.transfer_kit": json.dumps({**meta, "config": config})})
    with pytest.raises(InvalidAdapterError):
        kit_from_bytes(data)
    good = kit_to_bytes(kit, TASK)
    wrong_rank = good.replace(b'\\"r\\": ' + str(meta["config"]["r"]).encode(),
                              b'\\"r\\": ' + str(meta["config"]["r"] + 3).encode(), 1)
    assert wrong_rank != good
    with pytest.raises(InvalidAdapterError):
        kit_from_bytes(wrong_rank)


def test_kit_from_bytes_refuses_a_truncated_kit(hub, data_file):
    from adapterhub.app.transfer_kit import find_kit, kit_from_bytes, kit_to_bytes

    _prepare(hub, data_file)
    kit, _ = find_kit(hub, hub.get(SOURCE))
    good = kit_to_bytes(kit, TASK)
    with pytest.raises(InvalidAdapterError):
        kit_from_bytes(good[:-16])


def test_read_texts_file_and_read_seeds_bounds(tmp_path: Path):
    from adapterhub.app.transfer_kit import MAX_SEEDS, read_seeds, read_texts_file

    ok = _texts_file(tmp_path / "ok.jsonl", ["a b c", "d e f"])
    ok.write_text(ok.read_text() + "\n   \n", encoding="utf-8")
    assert read_texts_file(ok, what="data") == ["a b c", "d e f"]  # blank lines skipped
    assert len(read_seeds(_texts_file(tmp_path / "32.jsonl", [f"t {i}" for i in range(MAX_SEEDS)]))) == MAX_SEEDS
    cases = {
        "33.jsonl": ("".join(json.dumps({"text": f"t {i}"}) + "\n" for i in range(MAX_SEEDS + 1)), "more than 32"),
        "empty.jsonl": ("", "no example"),
        "blank.jsonl": ("\n\n  \n", "no example"),
        "notjson.jsonl": ("hello\n", "line 1 is not JSON"),
        "notext.jsonl": ('{"text": "a"}\n{"txt": "b"}\n', "line 2 must be an object with a string"),
        "emptytext.jsonl": ('{"text": "   "}\n', "line 1 must be an object with a string"),
        "list.jsonl": ('["a"]\n', "line 1 must be an object with a string"),
    }
    for file, (body, message) in cases.items():
        (tmp_path / file).write_text(body, encoding="utf-8")
        with pytest.raises(InvalidParameterError, match=message):
            read_seeds(tmp_path / file)
    (tmp_path / "latin1.jsonl").write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(InvalidParameterError, match="must be UTF-8"):
        read_seeds(tmp_path / "latin1.jsonl")
    with pytest.raises(InvalidParameterError, match="cannot read"):
        read_seeds(tmp_path / "missing.jsonl")


# -- 3. the CLI: bad input is one line on stderr, exit 1, nothing written -------------------------------------


def _one_line_error(result, code: int = 1) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("error:") or code == 2, err
    assert "\n" not in err and "Traceback" not in err and "Traceback" not in result.stdout, err
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return err


@pytest.mark.parametrize(("case", "message"), [
    ("unknown-base", "unknown base 'nope'"),
    ("no-kit-no-seeds", "has no transfer kit and no seeds"),
    ("empty-seeds", "holds no examples"),
    ("blank-seeds", "holds no examples"),
    ("seeds-not-json", "line 1 is not JSON"),
    ("too-many-seeds", "more than 32"),
    ("generator-missing", "cannot load base model"),
    ("generator-not-causal", "is not a causal LM"),
    ("same-base", "already on minilm"),
    ("same-base-by-id", "already on minilm"),
    ("result-exists", "acme/taken"),
    ("result-is-source", "acme/adj"),
    ("bad-result-name", "name"),
    ("unknown-adapter", "acme/none"),
    ("too-many-samples", "--samples must be between 1 and 5000"),
    ("seeds-file-missing", "cannot read the seeds file"),
    ("source-base-unregistered", "which is not a registered base"),
    ("source-without-task", "records no task"),
    ("source-task-not-shipped", "not a shipped task"),
])
def test_cli_transfer_bad_input_fails_cleanly_and_writes_nothing(cli, hub, fake, tmp_path, seeds_file, case,
                                                                 message):
    from adapterhub.models.train import train_adapter

    taken = train_adapter(fake._get("minilm"), TASK, max_steps=1, rank=2, alpha=4, batch_size=8, seed=3).adapter
    hub.add_adapter(taken, "acme/taken", task=TASK)
    hub.add_adapter(random_adapter(1, base_model="someone/other-base"), "acme/foreign", task=TASK)
    hub.add_adapter(taken.with_config(taken.config.with_updates(lora_alpha=3)), "acme/notask")
    hub.add_adapter(taken.with_config(taken.config.with_updates(lora_alpha=5)), "acme/oddtask", task="my-own-task")
    seeds = ("--seeds", str(seeds_file))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n   \n\t\n")
    notjson = tmp_path / "notjson.jsonl"
    notjson.write_text("just a line of text\n")
    many = _texts_file(tmp_path / "many.jsonl", [f"seed number {i}" for i in range(33)])
    if case == "generator-missing":
        fake.missing.add("smollm2")
    args = {
        "unknown-base": ("acme/adj", "--to-base", "nope", *seeds),
        "no-kit-no-seeds": ("acme/adj", "--to-base", "mpnet"),
        "empty-seeds": ("acme/adj", "--to-base", "mpnet", "--seeds", str(empty)),
        "blank-seeds": ("acme/adj", "--to-base", "mpnet", "--seeds", str(blank)),
        "seeds-not-json": ("acme/adj", "--to-base", "mpnet", "--seeds", str(notjson)),
        "too-many-seeds": ("acme/adj", "--to-base", "mpnet", "--seeds", str(many)),
        "generator-missing": ("acme/adj", "--to-base", "mpnet", *seeds),
        "generator-not-causal": ("acme/adj", "--to-base", "mpnet", "--generator", "minilm", *seeds),
        "same-base": ("acme/adj", "--to-base", "minilm", *seeds),
        "same-base-by-id": ("acme/adj", "--to-base", MINILM, *seeds),
        "result-exists": ("acme/adj", "--to-base", "mpnet", "--name", "acme/taken", *seeds),
        "result-is-source": ("acme/adj", "--to-base", "mpnet", "--name", "acme/adj", *seeds),
        "bad-result-name": ("acme/adj", "--to-base", "mpnet", "--name", "no slash here!", *seeds),
        "unknown-adapter": ("acme/none", "--to-base", "mpnet", *seeds),
        "too-many-samples": ("acme/adj", "--to-base", "mpnet", "--samples", "5001", *seeds),
        "seeds-file-missing": ("acme/adj", "--to-base", "mpnet", "--seeds", str(tmp_path / "nope.jsonl")),
        "source-base-unregistered": ("acme/foreign", "--to-base", "mpnet", *seeds),
        "source-without-task": ("acme/notask", "--to-base", "mpnet", *seeds),
        "source-task-not-shipped": ("acme/oddtask", "--to-base", "mpnet", *seeds),
    }[case]
    before = _state(hub.settings.home)
    result = cli("transfer", *CLI_SMALL, *args)  # later options win: "too-many-samples" overrides --samples
    err = _one_line_error(result)
    assert message in err, err
    assert _state(hub.settings.home) == before
    if case not in ("generator-missing", "generator-not-causal"):
        assert "smollm2" not in fake.loads and "mpnet" not in fake.loads  # refused before any model loads


def test_cli_usage_errors_exit_2(cli, hub, tmp_path, seeds_file):
    before = _state(hub.settings.home)
    for args in [("transfer", "prepare", SOURCE),  # no --data
                 ("transfer", "prepare"),
                 ("transfer", SOURCE),  # no --to-base
                 ("transfer", SOURCE, "extra", "--to-base", "mpnet"),
                 ("transfer", SOURCE, "--to-base", "mpnet", "--data", str(seeds_file)),
                 ("transfer", SOURCE, "--to-base", "mpnet", "--samples", "0")]:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout
    assert "needs --data FILE" in cli("transfer", "prepare", SOURCE).stderr
    assert _state(hub.settings.home) == before


@pytest.mark.parametrize(("texts", "message"), [
    (["one text", "two texts", "three", "four"], "has 4 texts; the discriminator needs at least 5"),
    ([], "holds no examples"),
])
def test_cli_prepare_refuses_too_little_data(cli, hub, fake, tmp_path, texts, message):
    data = _texts_file(tmp_path / "few.jsonl", texts)
    before = _state(hub.settings.home)
    err = _one_line_error(cli("transfer", "prepare", SOURCE, "--data", str(data)))
    assert message in err
    assert _state(hub.settings.home) == before
    assert "smollm2" not in fake.loads  # refused before any model loads


def test_cli_prepare_of_an_unknown_adapter_or_a_missing_generator(cli, hub, fake, data_file):
    before = _state(hub.settings.home)
    assert "acme/none" in _one_line_error(cli("transfer", "prepare", "acme/none", "--data", str(data_file)))
    fake.missing.add("smollm2")
    assert "cannot load base model" in _one_line_error(cli("transfer", "prepare", SOURCE, "--data", str(data_file)))
    assert _state(hub.settings.home) == before


