"""``adapterhub list --limit/--cursor``: one page at a time, the next cursor in --json and as a hint."""

from __future__ import annotations

import json
from pathlib import Path

from adapterhub.store import AdapterRecord, Catalog
from tests.helpers import fake_digest


def _fill(home: Path, n: int) -> list[str]:
    names = [f"cli/a{i:02d}" for i in range(n)]
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4}
    with Catalog(f"sqlite:///{home / 'catalog.db'}") as catalog:
        catalog.bulk_add(
            AdapterRecord(name=name, digest=fake_digest(name), size=1, rank=2, alpha=4.0, target_modules=("q",),
                          config=config, task="even" if i % 2 == 0 else "odd")
            for i, name in enumerate(names)
        )
    return names


def test_list_pages_with_cursor(cli, home: Path) -> None:
    assert cli("list", "--json").exit_code == 0  # creates the home and its catalog
    names = _fill(home, 11)
    seen, cursor, pages = [], None, 0
    while True:
        result = cli("list", "--limit", "4", "--json", *(["--cursor", cursor] if cursor else []))
        assert result.exit_code == 0, result.stderr
        page = json.loads(result.stdout)
        seen += [r["name"] for r in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names and pages == 3
    assert json.loads(cli("list", "--json").stdout)[0]["name"] == "cli/a00"  # unpaged: a plain list
    odd = json.loads(cli("list", "--task", "odd", "--limit", "50", "--json").stdout)
    assert [r["name"] for r in odd["items"]] == names[1::2] and odd["next_cursor"] is None
    table = cli("list", "--limit", "2")
    assert table.exit_code == 0 and "cli/a01" in table.stdout and "--cursor " in table.stderr


def test_bad_cursor_is_a_one_line_error(cli, home: Path) -> None:
    assert cli("list", "--json").exit_code == 0
    result = cli("list", "--cursor", "not-a-cursor!", "--json")
    assert result.exit_code == 1 and result.stderr.startswith("error: invalid cursor") and "Traceback" not in result.stderr
