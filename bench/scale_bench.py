"""Scale: blobs in a bucket vs on disk, a catalog of a million entries, a merge batch on Ray.

Run (numbers in docs/scale.md):
    .venv/bin/python bench/scale_bench.py --postgres postgresql+psycopg://pgtest@127.0.0.1:55432/postgres \
        --json /tmp/scale.json --plot docs/scale.png

Three parts, each against its reference in the same process:

- ``blobs``: upload and download throughput of ``ObjectBlobStore`` to an S3 API server on loopback
  (``--s3``, or a ``moto`` server started here) against the local ``BlobStore``: big blobs
  (``--big-mib`` each, multipart) in MB/s and small ones (64 KiB) in blobs/s. Downloads start from
  an empty cache (what a new replica does). boto3 (``upload_file``/``download_file``) runs the same
  puts and reads, as the usual Python client. moto keeps objects in memory in one Python process, so
  the bucket numbers are a floor for a real object store, not a measurement of one.
- ``catalog``: ``bench/catalog_scale.py`` at 10k, 100k and 1M synthetic entries on PostgreSQL:
  p50/p99 of a search and of one page, and the whole ``adapterhub list --limit 50`` process.
- ``jobs``: a 20-merge batch in-process against a local Ray cluster (``bench/jobs_bench.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benches

MIB = 1 << 20


@contextmanager
def s3_server(endpoint: str | None) -> Iterator[str]:
    """The given endpoint, or a ``moto`` server started for the run."""
    if endpoint:
        yield endpoint
        return
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _bucket_store(endpoint: str, cache: Path) -> Any:
    import boto3

    from adapterhub.store.object_blobs import ObjectBlobStore

    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"})
    bucket = f"scale-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    return ObjectBlobStore(f"s3://{bucket}/blobs", cache)


def _throughput(store: Any, files: list[Path], drop_cache: bool) -> dict[str, float]:
    """Upload every file, then read every blob back whole (from an empty cache for a bucket)."""
    import shutil

    started = time.perf_counter()
    digests = [store.put_file(f)[0] for f in files]
    upload_s = time.perf_counter() - started
    if drop_cache:
        shutil.rmtree(store.root, ignore_errors=True)
    started = time.perf_counter()
    for d in digests:
        with store.open(d) as f:
            while f.read(8 * MIB):
                pass
    download_s = time.perf_counter() - started
    return {"upload_s": upload_s, "download_s": download_s}


class Boto3Contender:
    """The same put/read through boto3 (``upload_file``/``download_file``, s3transfer's multipart
    with threads): the usual Python S3 client, to justify obstore on speed."""

    def __init__(self, endpoint: str, root: Path) -> None:
        import boto3

        self.client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                                   aws_secret_access_key="testing", region_name="us-east-1")
        self.bucket = f"boto-{uuid.uuid4().hex[:10]}"
        self.client.create_bucket(Bucket=self.bucket)
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def put_file(self, path: Path) -> tuple[str, int]:
        import hashlib

        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(8 * MIB):
                h.update(chunk)
        digest = h.hexdigest()
        self.client.upload_file(str(path), self.bucket, f"sha256/{digest}")
        return digest, path.stat().st_size

    def open(self, digest: str) -> Any:
        target = self.root / digest
        self.client.download_file(self.bucket, f"sha256/{digest}", str(target))
        return open(target, "rb")


def run_blob_bench(endpoint: str | None, *, big_mib: int = 128, big_count: int = 4, small_count: int = 200,
                   repeats: int = 3) -> dict[str, Any]:
    from adapterhub.store import BlobStore

    rows: dict[str, list[dict[str, float]]] = {}
    with s3_server(endpoint) as url, tempfile.TemporaryDirectory(prefix="scale-blobs-") as tmp:
        root = Path(tmp)
        for repeat in range(repeats):
            big = [root / f"big{repeat}-{i}" for i in range(big_count)]
            for i, f in enumerate(big):
                f.write_bytes(random.Random(repeat * 100 + i).randbytes(big_mib * MIB))
            small = [root / f"small{repeat}-{i}" for i in range(small_count)]
            for i, f in enumerate(small):
                f.write_bytes(random.Random(repeat * 10_000 + i).randbytes(64 * 1024))
            for kind, files in (("big", big), ("small", small)):
                local = BlobStore(root / f"local-{repeat}-{kind}")
                bucket = _bucket_store(url, root / f"cache-{repeat}-{kind}")
                boto = Boto3Contender(url, root / f"boto-{repeat}-{kind}")
                for name, store, drop in (("local", local, False), ("s3", bucket, True), ("boto3", boto, False)):
                    rows.setdefault(f"{kind}_{name}", []).append(_throughput(store, files, drop))
            for f in big + small:
                f.unlink()
    total_big = big_mib * big_count
    out: dict[str, Any] = {"big_mib": big_mib, "big_count": big_count, "small_count": small_count, "repeats": repeats}
    for name in ("local", "s3", "boto3"):
        up = [total_big / r["upload_s"] for r in rows[f"big_{name}"]]
        down = [total_big / r["download_s"] for r in rows[f"big_{name}"]]
        sup = [small_count / r["upload_s"] for r in rows[f"small_{name}"]]
        sdown = [small_count / r["download_s"] for r in rows[f"small_{name}"]]
        out[name] = {"upload_mib_s": statistics.median(up), "download_mib_s": statistics.median(down),
                     "small_upload_per_s": statistics.median(sup), "small_download_per_s": statistics.median(sdown)}
    out["s3_vs_local"] = {k: out["s3"][k] / out["local"][k] for k in out["s3"]}
    out["s3_vs_boto3"] = {k: out["s3"][k] / out["boto3"][k] for k in out["s3"]}
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    blobs = result.get("blobs")
    if blobs:
        labels = ["upload MiB/s", "download MiB/s"]
        for i, name in enumerate(("local", "s3", "boto3")):
            values = [blobs[name]["upload_mib_s"], blobs[name]["download_mib_s"]]
            label = {"s3": "ours (obstore) to S3", "boto3": "boto3 to S3", "local": "local disk"}[name]
            axes[0].bar([x + 0.27 * i for x in range(2)], values, width=0.27, label=label)
        axes[0].set_xticks([0.27, 1.27], labels)
        axes[0].set_yscale("log")
        axes[0].set_title(f"blobs: {blobs['big_count']} x {blobs['big_mib']} MiB")
        axes[0].legend()
    catalog = result.get("catalog")
    if catalog:
        sizes = sorted(catalog, key=int)
        for key in ("search_p50_ms", "search_p99_ms", "page_p50_ms", "page_p99_ms"):
            axes[1].plot([int(s) for s in sizes], [catalog[s][key] for s in sizes], marker="o", label=key)
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        axes[1].set_xlabel("catalog entries (PostgreSQL)")
        axes[1].set_ylabel("ms")
        axes[1].set_title("catalog search and page latency")
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", help="PostgreSQL admin URL for the catalog part (skipped without)")
    parser.add_argument("--s3", help="S3 API endpoint (default: start a moto server)")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--parts", default="blobs,catalog,jobs")
    parser.add_argument("--big-mib", type=int, default=128)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {}
    if "blobs" in parts:
        result["blobs"] = run_blob_bench(args.s3, big_mib=args.big_mib)
        print(json.dumps({"blobs": result["blobs"]}, indent=2), flush=True)
    if "catalog" in parts and args.postgres:
        from catalog_scale import run_catalog_bench

        result["catalog"] = run_catalog_bench(args.postgres, sizes=tuple(int(s) for s in args.sizes.split(",")))
        print(json.dumps({"catalog": result["catalog"]}, indent=2), flush=True)
    if "jobs" in parts:
        from jobs_bench import run_merge_batch_bench

        result["jobs"] = run_merge_batch_bench(n=20)
        print(json.dumps({"jobs": result["jobs"]}, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
