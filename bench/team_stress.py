"""A team deployment under load: N ``adapterhub serve`` processes, one PostgreSQL, one bucket.

Run (needs a PostgreSQL admin URL and an S3 API endpoint, e.g. the ones ``.ci/run`` starts):
    .venv/bin/python bench/team_stress.py --postgres postgresql+psycopg://pgtest@127.0.0.1:55432/postgres \
        --s3 http://127.0.0.1:5077 --seconds 30 --json /tmp/team_stress.json

What it does: creates a fresh database and a fresh bucket, seeds a few repos, starts ``--servers``
real ``adapterhub serve`` processes (each its own home and cache; shared catalog and bucket),
then for ``--seconds`` runs ``--pullers`` threads that download weights through a random server
with ``huggingface_hub`` (HEAD + 302 to the bucket + GET, the bytes checked against their sha256)
and ``--pushers`` threads that commit new weights with ``HfApi.upload_folder`` through a random
server, half to their own repo and half to one repo all pushers share (the head moves by
compare-and-set in the database, so racing commits are rebuilt, never lost). Afterwards every
commit a pusher got an id for must be in its repo's history, each repo's head must be the last
commit made to it, and every blob the catalog references must verify in the bucket.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _adapter_folder(folder: Path, seed: int) -> Path:
    """A small PEFT folder with random factors (BERT-shaped, 2 layers)."""
    import torch

    from adapterhub.lora import LoraAdapter, LoraModule

    g = torch.Generator().manual_seed(seed)
    modules = {
        f"encoder.layer.{layer}.attention.self.{name}": LoraModule(
            torch.randn(4, 64, generator=g), torch.randn(64, 4, generator=g), 0.5)
        for layer in range(2) for name in ("query", "value")
    }
    LoraAdapter.from_modules(modules, base_model="tiny-bert").save(folder)
    return folder


@contextmanager
def _database(admin_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text

    name = f"adapterhub_stress_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _bucket(endpoint: str) -> str:
    import boto3

    bucket = f"adapterhub-stress-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


@contextmanager
def _servers(n: int, env: dict[str, str], root: Path) -> Iterator[list[str]]:
    """Start ``n`` ``adapterhub serve`` processes; yield their URLs once each answers."""
    procs, urls = [], []
    try:
        for i in range(n):
            port = _free_port()
            home = root / f"server{i}"
            log = open(root / f"server{i}.log", "wb")
            procs.append(subprocess.Popen(
                [sys.executable, "-c", "from adapterhub.cli.main import main; main()", "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--log-level", "warning"],
                env={**env, "ADAPTERHUB_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        for url, proc in zip(urls, procs):
            while True:
                try:
                    if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server {url} did not start; see {root}")
                time.sleep(0.3)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_team_stress(postgres_admin_url: str, s3_endpoint: str, *, seconds: float = 30, servers: int = 3,
                    pullers: int = 8, pushers: int = 2, seed_repos: int = 4) -> dict[str, Any]:
    """Run the load and check the invariants; returns counts (errors, commits, pulls, checks)."""
    from huggingface_hub import HfApi, hf_hub_download

    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="adapterhub-stress-")))
        database = stack.enter_context(_database(postgres_admin_url))
        bucket = _bucket(s3_endpoint)
        env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ALLOW_HTTP": "true",
               "ADAPTERHUB_DATABASE_URL": database, "ADAPTERHUB_BLOB_URL": f"s3://{bucket}/blobs",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "OMP_NUM_THREADS": "1"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_TOKEN"):
            env.pop(var, None)
        saved = dict(os.environ)
        os.environ.update({k: v for k, v in env.items() if k.startswith(("AWS_", "ADAPTERHUB_", "HF_HUB_D"))})
        stack.callback(lambda: (os.environ.clear(), os.environ.update(saved)))

        from adapterhub.app import AdapterHub

        hub = AdapterHub(root / "admin")
        stack.callback(hub.close)
        token = hub.create_token(name="stress", admin=True)["token"]
        seeded = [f"team/seed{i}" for i in range(seed_repos)]
        for i, name in enumerate(seeded):
            hub.add(_adapter_folder(root / f"seed{i}", 1000 + i), name)
        urls = stack.enter_context(_servers(servers, env, root))

        stop = threading.Event()
        lock = threading.Lock()
        errors: list[str] = []
        pulls = [0]
        commits: dict[str, list[str]] = {}  # repo -> commit ids in the order the server answered them

        def note_error(where: str, e: BaseException) -> None:
            with lock:
                errors.append(f"{where}: {type(e).__name__}: {str(e)[:300]}")

        def puller(k: int) -> None:
            rng = random.Random(k)
            cache = root / f"hf-cache-{k}"
            while not stop.is_set():
                with lock:
                    pushed = sorted(commits)
                url, repo = rng.choice(urls), rng.choice(seeded + pushed)
                try:
                    path = Path(hf_hub_download(repo, "adapter_model.safetensors", endpoint=url, token=token,
                                                cache_dir=cache, force_download=True))
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    if digest != path.resolve().name:  # the HF cache names the blob by its sha256 etag
                        raise AssertionError(f"pulled bytes of {repo} hash to {digest}, not {path.resolve().name}")
                    with lock:
                        pulls[0] += 1
                except Exception as e:  # counted, not raised: the run reports every error
                    note_error(f"pull {repo} via {url}", e)

        def pusher(k: int) -> None:
            rng = random.Random(100 + k)
            own = f"team/pusher{k}"
            HfApi(endpoint=urls[0], token=token).create_repo(own, exist_ok=True)
            n = 0
            while not stop.is_set():
                repo = own if n % 2 == 0 else "team/shared"
                url = rng.choice(urls)
                folder = _adapter_folder(root / f"push-{k}-{n}", seed=10_000 * (k + 1) + n)
                try:
                    info = HfApi(endpoint=url, token=token).upload_folder(repo_id=repo, folder_path=str(folder))
                    with lock:
                        commits.setdefault(repo, []).append(info.oid)
                except Exception as e:
                    note_error(f"push {repo} via {url}", e)
                n += 1

        HfApi(endpoint=urls[0], token=token).create_repo("team/shared", exist_ok=True)
        threads = [threading.Thread(target=puller, args=(k,)) for k in range(pullers)]
        threads += [threading.Thread(target=pusher, args=(k,)) for k in range(pushers)]
        started = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        elapsed = time.monotonic() - started

        lost, wrong_heads = [], []
        for repo, made in commits.items():
            history = {r.revision for r in hub.catalog.revisions(repo)}
            lost += [f"{repo}@{c}" for c in made if c not in history]
            head = HfApi(endpoint=urls[-1], token=token).model_info(repo).sha
            if repo != "team/shared" and head != made[-1]:
                wrong_heads.append(f"{repo}: head {head}, last commit {made[-1]}")
        verify = hub.verify()
        return {
            "seconds": round(elapsed, 1), "servers": servers, "pullers": pullers, "pushers": pushers,
            "pulls": pulls[0], "commits": sum(len(c) for c in commits.values()),
            "shared_repo_commits": len(commits.get("team/shared", [])),
            "errors": len(errors), "error_samples": errors[:10], "lost_commits": lost,
            "wrong_heads": wrong_heads, "blobs_missing": verify["missing"], "blobs_corrupt": verify["corrupt"],
            "blobs_checked": len(hub.catalog.referenced_digests()),
        }


def main() -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # loopback only; huggingface_hub reads these on import
        os.environ.pop(var, None)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", required=True, help="PostgreSQL admin URL (a database is created and dropped)")
    parser.add_argument("--s3", required=True, help="S3 API endpoint (a bucket is created)")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run_team_stress(args.postgres, args.s3, seconds=args.seconds, servers=args.servers)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
