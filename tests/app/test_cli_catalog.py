"""The catalog through the CLI: happy paths, exact outputs, and every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    edit_adapter_config,
    edited_weights,
    make_peft_adapter,
    store_state,
    tiny_bert,
    write_random_adapter,
)


def test_empty_list_json_is_empty_array(cli) -> None:
    result = cli("list", "--json")
    assert result.exit_code == 0
    assert result.stdout == "[]\n"


@pytest.mark.parametrize("use_rslora", [False, True])
def test_add_export_round_trip_logits(cli, tmp_path: Path, input_ids: torch.Tensor, use_rslora: bool) -> None:
    from peft import PeftModel

    peft_model, folder = make_peft_adapter(
        tmp_path / "src",
        use_rslora=use_rslora,
        rank_pattern={"layer.1.attention.self.value": 2},
        target_modules=("query", "key", "value", "dense"),
    )
    with torch.no_grad():
        expected = peft_model(input_ids).last_hidden_state
    result = cli("add", folder, "--name", "acme/first", "--task", "demo", "--tag", "x", "--tag", "y", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["name"] == "acme/first" and record["rank"] == 4 and record["tags"] == ["x", "y"]
    assert record["ranks"]["encoder.layer.1.attention.self.value"] == 2
    assert record["target_modules"] == ["dense", "key", "query", "value"]
    assert cli("export", "acme/first", tmp_path / "out").exit_code == 0
    loaded = PeftModel.from_pretrained(tiny_bert(0), tmp_path / "out").eval()
    with torch.no_grad():
        got = loaded(input_ids).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_list_filters_show_lineage_rm(cli, tmp_path: Path, home: Path) -> None:
    write_random_adapter(tmp_path / "a", 1)
    write_random_adapter(tmp_path / "b", 2, base_model="other-base")
    assert cli("add", tmp_path / "a", "--name", "acme/a", "--task", "sql", "--tag", "prod").exit_code == 0
    assert cli("add", tmp_path / "b", "--name", "acme/b", "--task", "chat").exit_code == 0
    names = lambda *args: [r["name"] for r in json.loads(cli("list", "--json", *args).stdout)]  # noqa: E731
    assert names() == ["acme/a", "acme/b"]
    assert names("--task", "sql") == ["acme/a"]
    assert names("--tag", "prod") == ["acme/a"]
    assert names("--base-model", "other-base") == ["acme/b"]
    assert names("--search", "CHAT") == ["acme/b"]
    shown = json.loads(cli("show", "acme/a", "--json").stdout)
    assert shown["task"] == "sql" and shown["lineage"] == [] and len(shown["revisions"]) == 1
    tree = json.loads(cli("lineage", "acme/a", "--json").stdout)
    assert tree["name"] == "acme/a" and tree["parents"] == []
    table = cli("list")
    assert table.exit_code == 0 and "acme/a" in table.stdout and "acme/b" in table.stdout
    assert cli("rm", "acme/a").exit_code == 0
    assert names() == ["acme/b"]
    assert len(store_state(home)[1]) == 1  # the removed adapter's blob is gone


def test_same_content_shares_one_blob(cli, tmp_path: Path, home: Path) -> None:
    write_random_adapter(tmp_path / "a", 1)
    assert cli("add", tmp_path / "a", "--name", "acme/a").exit_code == 0
    assert cli("add", tmp_path / "a", "--name", "acme/a-copy").exit_code == 0
    assert len(store_state(home)[1]) == 1
    assert cli("rm", "acme/a").exit_code == 0
    assert len(store_state(home)[1]) == 1  # still referenced by acme/a-copy
    assert cli("rm", "acme/a-copy").exit_code == 0
    assert store_state(home) == ([], [], [])


def _truncate(folder: Path) -> None:
    path = folder / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-64])


def _drop_config(folder: Path) -> None:
    (folder / "adapter_config.json").unlink()


def _rank_mismatch(folder: Path) -> None:
    edit_adapter_config(folder, r=3)


def _wrong_shape(folder: Path) -> None:
    with edited_weights(folder) as tensors:
        key = next(k for k in tensors if k.endswith("lora_A.weight"))
        tensors[key] = torch.randn(tensors[key].shape[0] + 1, tensors[key].shape[1])


def _nan(folder: Path) -> None:
    with edited_weights(folder) as tensors:
        tensors[next(iter(tensors))][0, 0] = float("inf")


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def _pickle_bin(folder: Path) -> None:
    (folder / "adapter_model.safetensors").unlink()
    torch.save({"weights": _Evil()}, folder / "adapter_model.bin")


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (_truncate, "truncated"),
        (_drop_config, "no adapter_config.json"),
        (_rank_mismatch, "config and tensors disagree"),
        (_wrong_shape, "(d_out, r)"),
        (_nan, "NaN or Inf"),
        (_pickle_bin, "pickled code is never executed"),
    ],
)
def test_bad_adapter_exits_1_and_changes_nothing(
    cli, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, corrupt, message: str
) -> None:
    write_random_adapter(tmp_path / "good", 1)
    assert cli("add", tmp_path / "good", "--name", "acme/good").exit_code == 0
    before = store_state(home)
    folder = write_random_adapter(tmp_path / "bad", 2)
    corrupt(folder)
    monkeypatch.chdir(tmp_path)
    result = cli("add", folder, "--name", "acme/bad")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert store_state(home) == before
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("name", ["../../x", "a/b/c", "noslash", "/abs", "a/..", "a/b\\c", "acme/-x", ""])
def test_bad_names_refused(cli, tmp_path: Path, home: Path, name: str) -> None:
    folder = write_random_adapter(tmp_path / "a", 1)
    result = cli("add", folder, "--name", name)
    assert result.exit_code == 1 and "invalid adapter name" in result.stderr
    assert store_state(home) == ([], [], [])


def test_duplicate_name_refused(cli, tmp_path: Path, home: Path) -> None:
    assert cli("add", write_random_adapter(tmp_path / "a", 1), "--name", "acme/a").exit_code == 0
    before = store_state(home)
    result = cli("add", write_random_adapter(tmp_path / "b", 2), "--name", "acme/a")
    assert result.exit_code == 1 and "already exists" in result.stderr
    assert store_state(home) == before


@pytest.mark.parametrize("command", [["rm", "acme/nope"], ["show", "acme/nope"], ["export", "acme/nope", "out"]])
def test_unknown_name(cli, tmp_path: Path, home: Path, command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli(*command)
    assert result.exit_code == 1
    assert result.stderr == "error: no adapter named 'acme/nope' in the catalog; see `adapterhub list`\n"
    assert not (tmp_path / "out").exists()


def test_usage_error_exit_2(cli) -> None:
    assert cli("add").exit_code == 2
    assert cli("frobnicate").exit_code == 2


def test_export_refuses_corrupt_blob(cli, tmp_path: Path, home: Path) -> None:
    assert cli("add", write_random_adapter(tmp_path / "a", 1), "--name", "acme/a").exit_code == 0
    blob = next(p for p in (home / "blobs").rglob("*") if p.is_file())
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    result = cli("export", "acme/a", tmp_path / "out")
    assert result.exit_code == 1 and "corrupt" in result.stderr
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
    assert cli("verify").exit_code == 1


def test_every_command_has_help_with_example(cli) -> None:
    from adapterhub.cli.main import app

    import typer.main

    group = typer.main.get_command(app)
    assert group.commands, "no commands registered"
    for name, command in group.commands.items():
        result = cli(name, "--help")
        assert result.exit_code == 0, name
        assert "Example" in (command.help or ""), f"`adapterhub {name}` has no Example in its help"


def test_bad_tag_refused_before_anything_is_written(cli, tmp_path: Path, home: Path) -> None:
    folder = write_random_adapter(tmp_path / "a", 1)
    result = cli("add", folder, "--name", "acme/a", "--tag", "x" * 300)
    assert result.exit_code == 1 and "longer than 255 characters" in result.stderr
    assert store_state(home) == ([], [], [])


# ---------------------------------------------------------------------------- help, version, start-up
def _help_pages(cli) -> dict[str, str]:
    """``adapterhub --help`` and the ``--help`` of every command and token subcommand."""
    from adapterhub.cli.main import COMMANDS

    argvs = [[], *([name] for name in COMMANDS), *(["token", sub] for sub in ("create", "list", "revoke"))]
    pages = {}
    for argv in argvs:
        result = cli(*argv, "--help")
        assert result.exit_code == 0, (argv, result.output)
        pages[" ".join(argv) or "adapterhub"] = result.stdout
    return pages


def test_help_shows_no_type_placeholders(cli) -> None:
    """Flags read ``--json``, values ``--tag TEXT``: never ``<bool>``, ``<list[str]>`` or ``<str>``."""
    pages = _help_pages(cli)
    for page, text in pages.items():
        for line in text.splitlines():
            if line.startswith("  ") and not line.startswith("      "):  # an option or argument row
                name_column = line.strip().split("  ")[0]  # before its help text
                assert "<" not in name_column, (page, line)
    assert "  --tag TEXT " in pages["add"] and "  --json  " in pages["add"]
    assert "  --force  " in pages["export"] and "  --record / --no-record  " in pages["eval"]


def test_help_examples_stay_line_by_line_and_can_run(cli) -> None:
    pages = _help_pages(cli)
    assert "\n      adapterhub add ./my-lora --name acme/sql-lora --task text-to-sql --tag sql\n" in pages["add"]
    assert "\n      adapterhub serve --port 8000 &\n" in pages["serve"] and "&&" not in pages["serve"]
    assert "About 2.5 minutes on 2 cores (the first run also dequantises SmolLM2 and unzips MPNet once, ~30 s); --quick about 1.5 minutes." \
        in " ".join(pages["demo"].split())


def test_version(cli) -> None:
    from importlib.metadata import version

    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"adapterhub {version('adapterhub')}\n"


def test_root_help_lists_each_command_with_its_own_summary(cli) -> None:
    """The root help prints a table (so it imports no command module); it must say what each command says."""
    import inspect

    import typer.main

    from adapterhub.cli.main import COMMANDS, app

    group = typer.main.get_command(app)
    root = cli("--help").stdout
    for name, entry in COMMANDS.items():
        first_paragraph = inspect.cleandoc(group.commands[name].help or "").split("\n\n")[0]
        assert " ".join(first_paragraph.split()) == entry.summary, name
        assert f"  {name}  " in root and entry.summary.split()[0] in root


def _modules_after(argv: list[str]) -> set[str]:
    """The modules a fresh ``adapterhub ARGV`` process has imported when it ends."""
    code = (
        "import sys\n"
        "from adapterhub.cli.main import main\n"
        f"sys.argv = ['adapterhub', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return set(done.stderr.split())


def test_root_help_and_list_json_import_only_what_they_use(home: Path) -> None:
    """The start-up budget: ``--help`` imports no command module; ``list --json`` only the catalog's."""
    others = {"adapterhub.cli.merge", "adapterhub.cli.evaluate", "adapterhub.cli.hub"}
    heavy = {"rich", "torch", "adapterhub.merge", "adapterhub.eval"}
    loaded = _modules_after(["--help"])
    assert "adapterhub.cli.main" in loaded
    assert not loaded & (others | heavy | {"adapterhub.cli.catalog", "adapterhub.app"})
    loaded = _modules_after(["list", "--json"])
    assert "adapterhub.cli.catalog" in loaded
    assert not loaded & (others | heavy)


# ---------------------------------------------------------------------------- rough edges (facade side by the lead)
def test_export_refuses_a_file_or_a_non_empty_folder_unless_forced(cli, tmp_path: Path) -> None:
    assert cli("add", write_random_adapter(tmp_path / "a", 1), "--name", "acme/a").exit_code == 0
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    result = cli("export", "acme/a", a_file)
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert a_file.read_text() == "keep me"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.md").write_text("mine")
    refused = cli("export", "acme/a", busy)
    assert refused.exit_code == 1 and refused.stderr.startswith("error: ")
    assert sorted(p.name for p in busy.iterdir()) == ["notes.md"]
    assert cli("export", "acme/a", busy, "--force").exit_code == 0
    assert (busy / "adapter_model.safetensors").exists() and (busy / "notes.md").read_text() == "mine"
    assert cli("export", "acme/a", tmp_path / "new" / "folder").exit_code == 0


def test_lineage_of_an_unknown_name_exits_1(cli) -> None:
    result = cli("lineage", "ns/never-existed")
    assert result.exit_code == 1 and result.stdout == ""
    assert "no adapter named 'ns/never-existed'" in result.stderr
