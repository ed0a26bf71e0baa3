"""Peak memory of a streaming merge: 8 Llama-7B-shaped r=16 adapters read lazily from disk.

Run:
    .venv/bin/python bench/merge_memory.py                      # lego, then svd
    .venv/bin/python bench/merge_memory.py --methods lego --n 8 --keep-dir /tmp/llama-loras

The parent writes the adapters as real PEFT folders (safetensors) in a temp dir, then runs each
merge in a fresh child process that opens them with ``LoraAdapter.load(validate=False)`` (lazy
``safe_open`` reads) and reports, from ``/proc/self/status``:

* ``VmHWM`` (peak resident set, what the OS charges) minus the RSS after imports and opening;
* the peak of ``RssAnon`` (heap: tensors the merge allocated) and of ``RssFile`` (pages of the
  memory-mapped safetensors files that are resident; the kernel can drop them at will, they are
  page cache, not allocations), sampled every 5 ms by a thread.

Budget: one module of every input (the largest: gate/up, 8 x 16 x (11008 + 4096) floats) plus
the output adapter; the streaming target is a peak increase within about 2x of that.

The Llama-7B shapes and the adapter writer are in ``synthetic_adapters.py`` (shared with
``merge_bench.py`` and ``hub_load.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from synthetic_adapters import MODULES, write_adapters

MB = 1024 * 1024


def largest_module_set_bytes(n: int, r: int = 16, bytes_per: int = 4) -> int:
    """Bytes of the largest module (A and B) of every input: what streaming must hold at once."""
    return max(n * r * (d_out + d_in) * bytes_per for d_out, d_in in MODULES.values())


# ---------------------------------------------------------------------------- child: one merge
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakSampler(threading.Thread):
    """Samples RssAnon / RssFile every few ms (the kernel keeps a peak only for the total)."""

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.anon = 0
        self.file = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.anon = max(self.anon, _status_kb("RssAnon"))
            self.file = max(self.file, _status_kb("RssFile"))
            time.sleep(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def child(folders: list[str], method: str, k: int, threads: int | None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    from adapterhub.lora import LoraAdapter
    from adapterhub.merge import merge_adapters

    adapters = [LoraAdapter.load(f, validate=False) for f in folders]
    base_rss = _status_kb("VmRSS")
    base_anon, base_file = _status_kb("RssAnon"), _status_kb("RssFile")
    # VmHWM cannot be reset without privileges on every kernel; imports and opening are already in it,
    # and the merge dominates, so we report VmHWM - baseline and the sampled anon/file peaks.
    sampler = PeakSampler()
    sampler.start()
    started = time.perf_counter()
    result = merge_adapters(adapters, method, params={"k": k})
    elapsed = time.perf_counter() - started
    sampler.stop()
    out_bytes = sum(m.A.numel() * m.A.element_size() + m.B.numel() * m.B.element_size() for _, m in result.adapter.modules())
    return {
        "method": method,
        "k": k,
        "threads": torch.get_num_threads(),
        "n": len(folders),
        "modules": len(result.report.modules),
        "seconds": round(elapsed, 2),
        "baseline_rss_mb": round(base_rss / 1024, 1),
        "peak_rss_increase_mb": round((_status_kb("VmHWM") - base_rss) / 1024, 1),
        "peak_anon_increase_mb": round((sampler.anon - base_anon) / 1024, 1),
        "peak_file_increase_mb": round((sampler.file - base_file) / 1024, 1),
        "output_mb": round(out_bytes / MB, 1),
        "module_set_mb": round(largest_module_set_bytes(len(folders)) / MB, 1),
        "rel_error": result.report.rel_error,
        "shape_error": result.report.shape_error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="lego,svd")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the merge (default: torch's)")
    parser.add_argument("--keep-dir", help="write (or reuse) the adapters here instead of a temp dir")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.method, args.k, args.threads)))
        return

    with tempfile.TemporaryDirectory(prefix="merge-memory-") as tmp:
        root = Path(args.keep_dir or tmp)
        t = time.perf_counter()
        folders = write_adapters(root, args.n)
        size = sum((f / "adapter_model.safetensors").stat().st_size for f in folders)
        print(f"{args.n} adapters ready in {root} ({size / MB:.0f} MB on disk, {time.perf_counter() - t:.1f}s)")
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--method", method, "--k", str(args.k), "--child", *map(str, folders)]
            if args.threads:
                cmd[2:2] = ["--threads", str(args.threads)]
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            r = json.loads(out.strip().splitlines()[-1])
            budget = r["module_set_mb"] + r["output_mb"]
            print(
                f"{method:>5} k={r['k']} threads={r['threads']}: {r['modules']} modules in {r['seconds']}s | "
                f"peak RSS +{r['peak_rss_increase_mb']} MB "
                f"(anon +{r['peak_anon_increase_mb']} MB, mmapped file pages +{r['peak_file_increase_mb']} MB) | "
                f"budget one module set {r['module_set_mb']} MB + output {r['output_mb']} MB = {budget:.1f} MB | "
                f"anon/budget = {r['peak_anon_increase_mb'] / budget:.2f}x, total/budget = "
                f"{r['peak_rss_increase_mb'] / budget:.2f}x | baseline RSS {r['baseline_rss_mb']} MB | "
                f"shape_error {r['shape_error']:.3f}"
            )


if __name__ == "__main__":
    main()
