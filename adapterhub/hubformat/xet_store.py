"""Xorbs received from Xet uploads, kept until a shard rebuilds the files made of them.

A xorb is stored only after :func:`~adapterhub.hubformat.xet.parse_xorb` checked that its chunks
hash to its name, so one file per name, shared by every uploader, is safe: nobody can plant other
bytes under a name. It is stored uncompressed, its chunk offsets after the data (one file, renamed
into place whole), so rebuilding a file is seeks and copies, not a second decompression.

A shard then rebuilds each file it lists into :class:`~adapterhub.hubformat.lfs_objects.LfsObjects`
(through an :class:`~adapterhub.hubformat.lfs_objects.LfsReceiver`, which keeps the file only if
its sha256 is the one the shard declared): from there the commit takes it exactly as it takes an
object uploaded through the LFS basic transfer.

The *generation* names the set of xorbs a client may still count on. ``hf_xet`` remembers the
shards it uploaded, per CAS URL, and later skips every xorb whose chunks such a shard lists,
assuming the server keeps xorbs forever. This store drops them (``remove_stale``, ``gc``), and a
new home can come up at a URL an old one had: in both cases a client would send a shard naming
xorbs that are gone (a 422 it cannot recover from). So the CAS URL carries the generation, a
random name that is new for every home and changes before any xorb is removed: a client then
starts a fresh shard cache and uploads every xorb again.
"""

from __future__ import annotations

import os
import re
import secrets
import struct
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from adapterhub.errors import InvalidAdapterError, UploadTooLargeError
from adapterhub.hubformat.lfs_objects import LfsObjects, remove_untouched
from adapterhub.hubformat.xet import XetFile, hash_hex, parse_xorb

__all__ = ["XetXorbs"]

_MAGIC = b"AHXORB1\n"
_COPY = 4 << 20
_GENERATION_FILE = ".generation"
GENERATION = re.compile(r"[0-9a-f]{16}")


class XetXorbs:
    """The verified xorbs of one home (``<home>/uploads/xet``), shared by every worker on it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, xorb: bytes) -> Path:
        return self.root / hash_hex(xorb)

    def generation(self) -> str:
        """The current generation (see the module docstring); created on first use."""
        try:
            value = (self.root / _GENERATION_FILE).read_text().strip()
        except FileNotFoundError:
            value = ""
        return value if GENERATION.fullmatch(value) else self._new_generation()

    def _new_generation(self) -> str:
        """Start a new generation (every worker reads the file, so all hand out the new URL)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        value = secrets.token_hex(8)
        fd, tmp = tempfile.mkstemp(prefix=".gen-", dir=self.root)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        os.replace(tmp, self.root / _GENERATION_FILE)
        return value

    def has(self, xorb: bytes) -> bool:
        return self.path(xorb).is_file()

    def touch(self, xorb: bytes) -> bool:
        """Whether the xorb is here; if so, mark it in use again (``remove_stale`` keeps it)."""
        try:
            os.utime(self.path(xorb))
        except FileNotFoundError:
            return False
        return True

    def receive(self, xorb: bytes, body: bytes) -> bool:
        """Check a serialized xorb and keep it under its hash; False if it was here already.

        The chunks are decompressed one at a time straight into a temp file, which is renamed into
        place only once their hash matched ``xorb``.

        Raises:
            InvalidAdapterError: the body is not a valid xorb, or not the one ``xorb`` names.
        """
        if self.touch(xorb):  # a retry, or the same chunks in another upload: nothing to check
            return False
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".recv-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC)
                chunks = parse_xorb(body, xorb, f.write)
                f.write(struct.pack(f"<{len(chunks.offsets)}Q", *chunks.offsets))
                f.write(struct.pack("<I", chunks.count))
            os.replace(tmp, self.path(xorb))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def _open(self, xorb: bytes) -> tuple[BinaryIO, list[int]]:
        """An open xorb file (its data starts after the magic) and its chunk offsets (the trailer)."""
        try:
            f = self.path(xorb).open("rb")
        except FileNotFoundError:
            raise InvalidAdapterError(
                f"xorb {hash_hex(xorb)} was not uploaded (or expired); upload it before the shard that uses it"
            ) from None
        f.seek(-4, os.SEEK_END)
        (count,) = struct.unpack("<I", f.read(4))
        f.seek(-4 - 8 * (count + 1), os.SEEK_END)
        offsets = list(struct.unpack(f"<{count + 1}Q", f.read(8 * (count + 1))))
        return f, offsets

    def rebuild(self, file: XetFile, objects: LfsObjects, *, max_bytes: int) -> bool:
        """Rebuild ``file`` from its xorbs into ``objects`` under its sha256; False if it was there.

        Raises:
            UploadTooLargeError: the file is larger than ``max_bytes``.
            InvalidAdapterError: a xorb is missing, a chunk range is outside its xorb, a term's
                size is not what its chunks hold, or the bytes do not have the declared sha256
                (nothing is kept then).
        """
        size = file.size
        if size > max_bytes:
            raise UploadTooLargeError(f"a file of {size} bytes is over this hub's {max_bytes}-byte upload limit")
        if objects.has(file.sha256, size):
            return False
        receiver = objects.receiver(file.sha256, size)
        try:
            for term in file.terms:
                f, offsets = self._open(term.xorb)
                with f:
                    if term.end > len(offsets) - 1:
                        raise InvalidAdapterError(f"a shard term asks for chunks past the end of xorb {hash_hex(term.xorb)}")
                    begin, stop = offsets[term.start], offsets[term.end]
                    if stop - begin != term.size:
                        raise InvalidAdapterError("a shard term's size is not the size of the chunks it names")
                    f.seek(len(_MAGIC) + begin)
                    left = stop - begin
                    while left:
                        block = f.read(min(_COPY, left))
                        if not block:
                            raise InvalidAdapterError(f"xorb {hash_hex(term.xorb)} is truncated")
                        receiver.write(block)
                        left -= len(block)
            receiver.finish()  # checks the size and the sha256
        finally:
            receiver.discard()
        return True

    def remove_stale(self, *, grace_seconds: float = 24 * 3600) -> list[tuple[Path, int]]:
        """Remove xorbs (and partial writes) untouched for ``grace_seconds``; returns each and its size.

        A new generation starts first, so that no client is handed a URL whose cache names them.
        """
        cutoff = time.time() - grace_seconds
        entries = list(self.root.iterdir()) if self.root.is_dir() else []
        if any(_modified_before(p, cutoff) for p in entries if p.name != _GENERATION_FILE):
            self._new_generation()
        return remove_untouched(self.root, grace_seconds, keep=(_GENERATION_FILE,))


def _modified_before(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False
