"""Crash safety (SIGKILL in the middle of ``add``) and concurrent writers on one SQLite catalog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from adapterhub.app import AdapterHub
from tests.helpers import write_random_adapter

REPO = Path(__file__).resolve().parents[2]


def _assert_consistent(home: Path) -> None:
    """Every row has a verified blob; nothing but complete blobs under final names."""
    hub = AdapterHub(home)
    try:
        for record in hub.list():
            assert hub.blobs.has(record.digest), f"row {record.name} has no blob"
            assert hub.blobs.verify(record.digest), f"blob of {record.name} is corrupt"
        for digest in hub.blobs.digests():
            assert hub.blobs.verify(digest), f"partial or corrupt blob {digest}"
        hub.gc(grace_seconds=0)
        leftovers = [p for p in (home / "blobs").rglob("*") if p.is_file() and p.name.startswith(".tmp-")]
        assert leftovers == [], "gc must remove temp files of killed writers"
        assert hub.verify() == {"missing": [], "corrupt": []}
    finally:
        hub.close()


@pytest.mark.slow
@pytest.mark.parametrize("kill_when", ["temp_file_appears", "blob_appears"])
def test_kill_during_add_leaves_no_row_without_blob(tmp_path: Path, kill_when: str) -> None:
    # a large adapter so that writing its blob takes long enough to be caught in the middle
    source = write_random_adapter(tmp_path / "big", 7, rank=64, layers=12, d=1024)
    home = tmp_path / "home"
    AdapterHub(home).close()  # migrate first so the child spends its time in add
    script = textwrap.dedent(
        f"""
        from adapterhub.app import AdapterHub
        AdapterHub({str(home)!r}).add({str(source)!r}, "acme/big")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    blobs = home / "blobs"
    deadline = time.monotonic() + 120
    caught = False
    while time.monotonic() < deadline and proc.poll() is None:
        files = [p for p in blobs.rglob("*") if p.is_file()] if blobs.exists() else []
        if kill_when == "temp_file_appears" and any(p.name.startswith(".tmp-") for p in files):
            caught = True
        if kill_when == "blob_appears" and any(not p.name.startswith(".tmp-") for p in files):
            caught = True
        if caught:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait(timeout=60)
    assert caught, "the add finished before it could be interrupted"
    _assert_consistent(home)


@pytest.mark.slow
def test_four_processes_add_25_each(tmp_path: Path) -> None:
    home = tmp_path / "home"
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from adapterhub.app import AdapterHub
        from tests.helpers import write_random_adapter
        worker, home, tmp = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
        hub = AdapterHub(home)
        for i in range(25):
            folder = write_random_adapter(tmp / f"w{worker}-{i}", seed=1000 * worker + i)
            hub.add(folder, f"acme/w{worker}-{i}")
        hub.close()
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(w), str(home), str(tmp_path)], cwd=REPO) for w in range(4)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    hub = AdapterHub(home)
    records = hub.list()
    assert len(records) == 100
    assert len({r.digest for r in records}) == 100
    assert all(hub.blobs.verify(r.digest) for r in records)
    assert len(list(hub.blobs.digests())) == 100
    hub.close()
