"""Load on ``adapterhub serve``: concurrent pulls and pushes, then a check of every blob; and the
throughput of pulling a ~100 MB adapter next to copying its file on the same disk.

Run (loopback only; everything lives in a temp dir that is removed afterwards):
    python bench/hub_load.py                               # 8 pullers + 2 pushers for 30 s, 100 MB
    python bench/hub_load.py --duration 5 --big-mb 0       # a quick run without the big adapter
    python bench/hub_load.py --json out.json

What it does:
1. A fresh ADAPTERHUB_HOME with a few seeded adapters and a write token; ``adapterhub serve`` is
   started in a subprocess on a free 127.0.0.1 port.
2. Load: ``--pullers`` threads each loop ``model_info`` -> ``hf_hub_download`` (config + weights,
   into a fresh cache, pinned to the listed commit) -> sha256 against the listed LFS sha256 ->
   ``LoraAdapter`` validation; ``--pushers`` threads each loop ``upload_folder`` of a new random
   adapter (to its own repo, and every third push to one repo shared by all pushers). Every loop
   ends at the deadline; any exception is an error.
3. After the server stops: every blob in the store is re-hashed, every pushed commit must be in the
   catalog with the digest that was pushed, and no staging folder may be left.
4. Big adapter (``--big-mb``): pull of its weights with ``hf_hub_download`` and the full
   ``AdapterHub.pull`` (download + sha256 check + validation + import), against ``shutil.copyfile``
   of the blob on the same disk; the median of ``--repeat`` runs each, for a PEFT-written file and
   a canonical one (``measure_big``), with ``pull_vs_hf_hub_download`` (the goal: >= 0.5). Only
   that part: ``python bench/hub_load.py --duration 0 --big-mb 100 --repeat 7``. The server's anonymous
   memory (RssAnon, sampled every 20 ms from /proc) is reported before and at its peak during
   those downloads, to show blobs are streamed, not read whole.

Exit code 1 if there was any error or any corrupt blob.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, hf_hub_download

from synthetic_adapters import write_adapter

from adapterhub.app import AdapterHub
from adapterhub.files import sha256_file
from adapterhub.lora import CONFIG_NAME, WEIGHTS_NAME, AdapterConfig, LoraAdapter, LoraModule

MB = 1024 * 1024


def make_adapter(seed: int, *, rank: int = 4, d: int = 64, layers: int = 2) -> LoraAdapter:
    """A small random LoRA on Llama-shaped projections (fast to make, a few KB)."""
    g = torch.Generator().manual_seed(seed)
    modules = {
        f"model.layers.{i}.self_attn.{p}": LoraModule(torch.randn(rank, d, generator=g), torch.randn(d, rank, generator=g), 1.0)
        for i in range(layers)
        for p in ("q_proj", "v_proj")
    }
    return LoraAdapter.from_modules(modules, base_model="bench/base")


@dataclass
class LoadResult:
    duration_s: float = 0.0
    pulls: int = 0
    pushes: int = 0
    bytes_pulled: int = 0
    errors: list[str] = field(default_factory=list)
    commits: list[tuple[str, str, str]] = field(default_factory=list)  # (repo, commit, digest)


def run_load(
    endpoint: str,
    token: str,
    repos: list[str],
    workdir: Path,
    *,
    duration: float = 30.0,
    pullers: int = 8,
    pushers: int = 2,
) -> LoadResult:
    """Pull and push concurrently until ``duration`` seconds have passed; errors are collected."""
    result = LoadResult()
    lock = threading.Lock()
    push_repos = [f"load/push-{w}" for w in range(pushers)] + ["load/shared"]
    api = HfApi(endpoint=endpoint, token=token)
    for repo in push_repos:
        api.create_repo(repo, exist_ok=True)
    # A first commit in each push repo, so pullers can read them from the start.
    for i, repo in enumerate(push_repos):
        folder = make_adapter(10_000_000 + i).save(workdir / f"first-{i}")
        commit = api.upload_folder(repo_id=repo, folder_path=str(folder)).oid
        result.commits.append((repo, commit, LoraAdapter.load(folder).digest))
    readable = repos + push_repos

    def fail(where: str, e: BaseException) -> None:
        with lock:
            result.errors.append(f"{where}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")

    def puller(w: int) -> None:
        client = HfApi(endpoint=endpoint)
        i = 0
        while time.monotonic() < deadline:
            repo = readable[(w + i) % len(readable)]
            cache = workdir / f"pull-{w}-{i}"
            try:
                info = client.model_info(repo, files_metadata=True)
                expected = {s.rfilename: s.lfs.sha256 for s in info.siblings if s.lfs}[WEIGHTS_NAME]
                kwargs: dict[str, Any] = {"revision": info.sha, "endpoint": endpoint, "cache_dir": str(cache)}
                weights = Path(hf_hub_download(repo, WEIGHTS_NAME, **kwargs))
                config = Path(hf_hub_download(repo, CONFIG_NAME, **kwargs))
                if sha256_file(weights)[0] != expected:
                    raise AssertionError(f"{repo}@{info.sha}: weights do not hash to the listed sha256")
                LoraAdapter.from_files(AdapterConfig.load(config), weights)  # validates shapes and values
                with lock:
                    result.pulls += 1
                    result.bytes_pulled += weights.stat().st_size
            except BaseException as e:  # noqa: BLE001 - every failure is reported
                fail(f"pull {repo}", e)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            i += 1

    def pusher(w: int) -> None:
        client = HfApi(endpoint=endpoint, token=token)
        i = 0
        while time.monotonic() < deadline:
            repo = "load/shared" if i % 3 == 2 else f"load/push-{w}"
            adapter = make_adapter(w * 1_000_000 + i)
            folder = adapter.save(workdir / f"push-{w}-{i}")
            try:
                commit = client.upload_folder(repo_id=repo, folder_path=str(folder), commit_message=f"load {w}/{i}").oid
                with lock:
                    result.pushes += 1
                    result.commits.append((repo, commit, adapter.digest))
            except BaseException as e:  # noqa: BLE001
                fail(f"push {repo}", e)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            i += 1

    started = time.monotonic()
    deadline = started + duration
    threads = [threading.Thread(target=puller, args=(w,)) for w in range(pullers)]
    threads += [threading.Thread(target=pusher, args=(w,)) for w in range(pushers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration + 300)
        if t.is_alive():
            result.errors.append(f"{t.name} did not finish within {duration + 300:.0f} s")
    result.duration_s = time.monotonic() - started
    return result


def verify_store(home: Path, commits: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Re-hash every blob; check every pushed commit is a revision with the pushed digest."""
    hub = AdapterHub(home)
    try:
        digests = list(hub.blobs.digests())
        corrupt = [d for d in digests if not hub.blobs.verify(d)]
        missing = hub.verify()["missing"]  # referenced by an entry, a revision or a hub file, yet absent
        wrong = []
        for repo, commit, digest in commits:
            revision = hub.catalog.get_revision(repo, commit)
            if revision.digest != digest:
                wrong.append(f"{repo}@{commit}: {revision.digest} != pushed {digest}")
        uploads = home / "uploads"
        # Commit staging folders left behind; lfs/ (its URL key, objects until gc) and xet/ (xorbs,
        # kept until gc) are the server's own stores, not leftovers of a commit.
        entries = uploads.iterdir() if uploads.is_dir() else ()
        leftovers = sorted(p.name for p in entries if p.name not in ("lfs", "xet"))
        return {
            "blobs_checked": len(digests),
            "corrupt": corrupt,
            "missing": missing,
            "wrong_commits": wrong,
            "staging_leftovers": leftovers,
            "revisions": sum(len(hub.catalog.revisions(n)) for n in hub.catalog.names()),
        }
    finally:
        hub.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """The ``adapterhub serve`` server in a subprocess on a free loopback port."""

    def __init__(self, home: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ADAPTERHUB_HOME": str(home)}
        # What `adapterhub serve --port P [--workers N]` runs, without loading every other CLI command.
        if workers == 1:
            code = (
                "import sys; from adapterhub.app import AdapterHub; from adapterhub.server import serve; "
                "serve(AdapterHub(), host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')"
            )
        else:
            code = (
                "import sys; from adapterhub.app import AdapterHub; from adapterhub.server.workers import "
                "serve_workers; s = AdapterHub().settings; serve_workers(workers=int(sys.argv[2]), "
                "home=str(s.home), database_url=s.database_url, port=int(sys.argv[1]), log_level='warning')"
            )
        cmd = [sys.executable, "-c", code, str(self.port), str(workers)]
        self.proc = subprocess.Popen(cmd, env=env)
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("adapterhub serve did not start")
            time.sleep(0.1)

    def _status_mb(self, key: str) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def peak_rss_mb(self) -> float | None:
        """Peak resident set (VmHWM): includes file pages of memory-mapped blobs, which are cache."""
        return self._status_mb("VmHWM")

    def anon_mb(self) -> float | None:
        """Anonymous (heap) memory now (RssAnon): what a whole-file read would inflate."""
        return self._status_mb("RssAnon")

    def sample_anon(self) -> tuple[threading.Event, list[float]]:
        """Sample RssAnon every 20 ms until the returned event is set."""
        stop, samples = threading.Event(), []

        def run() -> None:
            while not stop.is_set():
                value = self.anon_mb()
                if value is not None:
                    samples.append(value)
                time.sleep(0.02)

        threading.Thread(target=run, daemon=True).start()
        return stop, samples

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _timed(action: Any) -> float:
    """Seconds ``action()`` takes, after flushing dirty pages so earlier writes are not billed to it."""
    os.sync()
    t = time.perf_counter()
    action()
    return time.perf_counter() - t


def measure_big(
    home: Path, server: ServerProcess, token: str, workdir: Path, megabytes: int, repeat: int
) -> dict[str, Any]:
    """Pull throughput of a big adapter vs. ``hf_hub_download`` and a copy of its blob (median of runs).

    Two repos hold the same weights: ``bench/big`` as PEFT/``safetensors.save_file`` wrote them
    (uploaded with ``upload_folder``; the server serves those bytes as they are, whose header is
    not the canonical one) and ``bench/big-canonical`` pushed by ``AdapterHub.push`` (served as
    canonical bytes, which a pull links into its store). Each run times a copy of the blob, an
    ``hf_hub_download`` of the weights into a fresh cache and ``AdapterHub.pull`` into a fresh
    home and cache, of each repo; ``os.sync()`` before each, so writeback is not billed to the next.
    """
    endpoint = server.url
    api = HfApi(endpoint=endpoint, token=token)
    # Llama-7B q/v projections at rank 64: 2 MiB of float32 factors a module, two modules a layer
    folder = write_adapter(workdir / "big", seed=0, r=64, layers=max(1, round(megabytes / 4)), names=["q_proj", "v_proj"])
    size = (folder / WEIGHTS_NAME).stat().st_size
    api.create_repo("bench/big", exist_ok=True)
    t = time.perf_counter()
    api.upload_folder(repo_id="bench/big", folder_path=str(folder))
    push_s = time.perf_counter() - t
    shutil.rmtree(folder)
    hub = AdapterHub(home)
    blob = hub.blobs.path(hub.get("bench/big").digest)
    hub.close()
    pusher = AdapterHub(workdir / "pusher")
    pusher.add(write_adapter(workdir / "big2", seed=0, r=64, layers=max(1, round(megabytes / 4)),
                             names=["q_proj", "v_proj"]), "bench/big-canonical")
    pusher.push("bench/big-canonical", endpoint=endpoint, token=token)
    pusher.close()
    shutil.rmtree(workdir / "big2")
    shutil.rmtree(workdir / "pusher")

    repos = {"peft": "bench/big", "canonical": "bench/big-canonical"}
    copies: list[float] = []
    downloads: dict[str, list[float]] = {kind: [] for kind in repos}
    pulls: dict[str, list[float]] = {kind: [] for kind in repos}
    anon_before = server.anon_mb()
    stop, samples = server.sample_anon()
    for i in range(repeat):
        target = workdir / f"copy-{i}"
        copies.append(_timed(lambda: shutil.copyfile(blob, target)))
        target.unlink()
        for kind, repo in repos.items():
            cache = workdir / f"dl-{kind}-{i}"
            downloads[kind].append(
                _timed(lambda: hf_hub_download(repo, WEIGHTS_NAME, endpoint=endpoint, cache_dir=str(cache)))
            )
            shutil.rmtree(cache)

            os.environ["HF_HUB_CACHE"] = str(workdir / f"pull-cache-{kind}-{i}")
            client_home = AdapterHub(workdir / f"client-{kind}-{i}")
            pulls[kind].append(_timed(lambda: client_home.pull(repo, endpoint=endpoint)))
            client_home.close()
            shutil.rmtree(workdir / f"client-{kind}-{i}")
            shutil.rmtree(workdir / f"pull-cache-{kind}-{i}")
    os.environ.pop("HF_HUB_CACHE", None)
    stop.set()

    def rate(seconds: list[float]) -> float:
        return round(size / MB / statistics.median(seconds), 1)

    report: dict[str, Any] = {"size_mb": round(size / MB, 1), "repeat": repeat, "copy_mb_s": rate(copies)}
    for kind in repos:
        report[f"hf_hub_download_mb_s[{kind}]"] = rate(downloads[kind])
        report[f"adapterhub_pull_mb_s[{kind}]"] = rate(pulls[kind])
        report[f"pull_vs_hf_hub_download[{kind}]"] = round(
            statistics.median(downloads[kind]) / statistics.median(pulls[kind]), 3
        )
    report["pull_vs_copy[peft]"] = round(statistics.median(copies) / statistics.median(pulls["peft"]), 3)
    report |= {
        "push_mb_s": round(size / MB / push_s, 1),
        "server_anon_mb_before_downloads": anon_before,
        "server_anon_mb_peak_during_downloads": max(samples) if samples else None,
    }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    parser.add_argument("--pullers", type=int, default=8)
    parser.add_argument("--pushers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=4, help="adapters in the catalog before the load")
    parser.add_argument("--big-mb", type=int, default=100, help="size of the big adapter (0 to skip)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each big-adapter measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (serve --workers)")
    args = parser.parse_args(argv)
    # Loopback only: every call below passes the server's endpoint explicitly; make sure an offline
    # setting from the environment (read by huggingface_hub at import) does not block it.
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_TOKEN"):
        os.environ.pop(var, None)
    constants.HF_HUB_OFFLINE = False
    constants.HF_HUB_DISABLE_PROGRESS_BARS = True

    with tempfile.TemporaryDirectory(prefix="adapterhub-load-") as tmp:
        root = Path(tmp)
        home = root / "server-home"
        hub = AdapterHub(home)
        token = hub.create_token(name="bench", admin=True)["token"]  # pushes go to several namespaces
        repos = [hub.add_adapter(make_adapter(i), f"seed/adapter-{i}").name for i in range(args.seeds)]
        hub.close()
        server = ServerProcess(home, workers=args.workers)
        try:
            work = root / "work"
            work.mkdir()
            load = run_load(server.url, token, repos, work, duration=args.duration, pullers=args.pullers,
                            pushers=args.pushers)
            big = measure_big(home, server, token, work, args.big_mb, args.repeat) if args.big_mb else None
            rss = server.peak_rss_mb()
        finally:
            server.stop()
        check = verify_store(home, load.commits)

    report = {
        "load": {k: v for k, v in asdict(load).items() if k != "commits"},
        "pulls_per_s": round(load.pulls / load.duration_s, 1),
        "pushes_per_s": round(load.pushes / load.duration_s, 1),
        "verify": check,
        "big_adapter": big,
        "server_peak_rss_mb": rss,
        "settings": vars(args) | {"json": str(args.json) if args.json else None},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    bad = load.errors or check["corrupt"] or check["missing"] or check["wrong_commits"] or check["staging_leftovers"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
