"""One read of a received safetensors file: its sha256, its canonical digest and its values at once.

Why this exists: a pull used to read a 100 MB weights file four times (sha256 of the file for the
hub's LFS check, the canonical digest for the model card, values and canonical bytes for the blob)
and to push every tensor through torch on the way, which made it ~5x slower than the download.

Almost every safetensors writer (``safetensors.save_file``, PEFT, our own canonical writer) lays the
tensor data out in sorted key order, contiguously from offset 0. Then the canonical file
(``tensorfile.canonical_header`` + each tensor's bytes in sorted key order) is the canonical header
followed by the file's data region *as it is*: no tensor needs to be decoded to produce it. Only
the JSON header differs (key order inside each entry, padding, extra metadata), and when it does
not, the file already *is* the canonical file and its sha256 is the catalog digest.

``scan_file`` reads the file once, in chunks, and on the way hashes the file as received (on a
worker thread: ``hashlib`` releases the GIL, so it overlaps the rest), hashes the canonical bytes
(only when they differ from the file's) and checks that every float is finite; where the file is
not canonical, ``copy_canonical`` writes the canonical file first (header + a kernel copy of the
data) and the scan reads that copy, so what is checked is what is stored. Files laid out otherwise (unsorted data, gaps, bool tensors, whose canonical
bytes are normalised) are left to the general path, ``LoraAdapter.iter_weights_bytes``.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adapterhub.errors import InvalidAdapterError
from adapterhub.lora.tensorfile import SafetensorsSource, canonical_header, check_finite

__all__ = ["CanonicalLayout", "WeightsScan", "canonical_layout", "copy_canonical", "scan_file"]

SCAN_CHUNK = 8 << 20  # 8 MiB: few syscalls and hash calls, and bounded memory (two chunks in flight)


@dataclass(frozen=True, slots=True)
class CanonicalLayout:
    """How a safetensors file maps onto its canonical bytes.

    Attributes:
        header: the canonical header (length prefix included).
        data_start: where the tensor data begins in the file (8 + its header length).
        is_canonical: the file's bytes are exactly the canonical bytes (same header too).
    """

    header: bytes
    data_start: int
    is_canonical: bool


@dataclass(frozen=True, slots=True)
class WeightsScan:
    """What one read of a weights file established.

    Attributes:
        file_sha256: sha256 of the file as received (what a hub lists as its LFS oid).
        file_size: its size in bytes.
        digest: sha256 of the canonical bytes (the catalog digest).
        size: size of the canonical bytes.
        is_canonical: the file's bytes are the canonical bytes (then ``digest == file_sha256``).
    """

    file_sha256: str
    file_size: int
    digest: str
    size: int
    is_canonical: bool


def canonical_layout(source: SafetensorsSource) -> CanonicalLayout | None:
    """The file's canonical layout, or ``None`` when its data region is not laid out canonically.

    Checked from the header alone: every tensor starts where the previous one (in sorted key order)
    ends, the first at 0, and the file ends with the last; no bool tensor (canonical bytes write
    bools as 0/1, a file may hold other non-zero bytes).
    """
    offset = 0
    metas = {}
    for key in sorted(source.keys()):
        dtype, shape, (begin, end) = source.entry(key)
        if dtype == torch.bool or begin != offset:
            return None
        nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        if end - begin != nbytes:
            return None
        metas[key] = (dtype, shape)
        offset = end
    if source.data_start + offset != os.path.getsize(source.path):
        return None
    header = canonical_header(metas)
    with open(source.path, "rb") as f:
        is_canonical = f.read(source.data_start) == header
    return CanonicalLayout(header, source.data_start, is_canonical)


_NUMPY_FLOATS = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}


def _all_finite(chunk: bytearray, dtype: torch.dtype) -> bool:
    """Whether every value in ``chunk`` is finite: one numpy reduction, as ``check_finite`` argues.

    Why numpy and not torch: torch's reductions run on its intra-op thread pool, whose wake-ups
    cost more than the sum itself for megabyte chunks (measured 100x slower than one thread on a
    2-vCPU machine while the hashing thread runs); numpy sums on the calling thread.
    """
    if dtype == torch.bfloat16:  # numpy has no bfloat16: its bits are the top half of a float32
        values = (np.frombuffer(chunk, np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif dtype in _NUMPY_FLOATS:
        values = np.frombuffer(chunk, _NUMPY_FLOATS[dtype])
    else:
        return True  # integer tensors are always finite
    with np.errstate(all="ignore"):
        total = values.sum(dtype=np.float64 if dtype == torch.float64 else np.float32)
        return bool(np.isfinite(total)) or bool(np.isfinite(values).all())


def _element_chunks(begin: int, end: int, itemsize: int) -> list[tuple[int, int]]:
    """``[begin, end)`` cut into pieces of at most ``SCAN_CHUNK`` bytes, on element boundaries."""
    step = max(itemsize, SCAN_CHUNK - SCAN_CHUNK % itemsize)
    return [(start, min(start + step, end)) for start in range(begin, end, step)]


def copy_canonical(source: SafetensorsSource, layout: CanonicalLayout, dest: Path) -> None:
    """Write the canonical file to ``dest``: the canonical header, then the data region copied by the kernel.

    Why ``copy_file_range``: a second 100 MB written from Python right after a download took
    0.3-0.4 s on the bench machine, the same copy in the kernel 0.05 s. Nothing is checked here:
    scan the copy afterwards (``scan_file(..., copy=dest)``), which proves it.
    """
    length = os.path.getsize(source.path) - layout.data_start
    with open(source.path, "rb") as src, open(dest, "wb") as out:
        out.write(layout.header)
        out.flush()
        offset, left = layout.data_start, length
        try:
            while left > 0:
                copied = os.copy_file_range(src.fileno(), out.fileno(), left, offset)
                if copied == 0:
                    break
                offset += copied
                left -= copied
        except (AttributeError, OSError):  # not Linux, or a file system that cannot: copy in Python
            src.seek(offset)
            out.seek(len(layout.header) + offset - layout.data_start)
            while left > 0 and (chunk := src.read(min(SCAN_CHUNK, left))):
                out.write(chunk)
                left -= len(chunk)
        if left:
            raise InvalidAdapterError("the file shrank while it was copied", path=str(source.path))


def scan_file(
    source: SafetensorsSource, layout: CanonicalLayout, *, copy: Path | None = None, origin: str | None = None
) -> WeightsScan:
    """Read the tensor data once: hash the file as received, hash the canonical bytes, check values.

    Args:
        source: the opened file (its header was validated when it was opened).
        layout: ``canonical_layout(source)``; the caller checked it is not ``None``.
        copy: a canonical copy of ``source`` (``copy_canonical``): its data is the one read, so
            both digests and the value checks are of the bytes in the copy; with the received
            header in front, they must still hash to the received file's sha256 (a hub's LFS
            oid), which proves the copy.
        origin: the name of the file in error messages.

    Raises:
        InvalidAdapterError: a tensor holds NaN or Inf (the message ``validate()`` gives), or the
            data is shorter or longer than the header says (the file changed while being read).
    """
    file_hash = hashlib.sha256()
    canonical_hash = None if layout.is_canonical else hashlib.sha256(layout.header)
    with open(source.path, "rb") as f:
        head = f.read(layout.data_start)
    file_hash.update(head)
    file_size, canonical_size = len(head), len(layout.header)
    data_path, data_start = (source.path, layout.data_start) if copy is None else (copy, len(layout.header))
    with open(data_path, "rb") as f, ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as pool:
        f.seek(data_start)
        pending: Future[None] | None = None
        for key in sorted(source.keys()):
            dtype, _, (begin, end) = source.entry(key)
            itemsize = torch.empty((), dtype=dtype).element_size()
            for start, stop in _element_chunks(begin, end, itemsize):
                chunk = bytearray(stop - start)
                if f.readinto(chunk) != len(chunk):
                    raise InvalidAdapterError(f"tensor '{key}' is truncated", path=origin)
                if pending is not None:
                    pending.result()  # at most two chunks in memory: the one hashing, this one
                pending = pool.submit(file_hash.update, chunk)
                if not _all_finite(chunk, dtype):
                    check_finite(key, torch.frombuffer(chunk, dtype=dtype), path=origin)  # raises its error
                if canonical_hash is not None:
                    canonical_hash.update(chunk)
                file_size += len(chunk)
                canonical_size += len(chunk)
        if pending is not None:
            pending.result()
        if f.read(1):
            raise InvalidAdapterError("the file grew while it was read", path=origin)
    file_sha256 = file_hash.hexdigest()
    digest = file_sha256 if canonical_hash is None else canonical_hash.hexdigest()
    return WeightsScan(file_sha256, file_size, digest, canonical_size, layout.is_canonical)
