"""Xorbs received from Xet uploads, kept until a shard rebuilds the files made of them.

A xorb is stored only after :func:`~adapterhub.hubformat.xet.parse_xorb` checked that its chunks
hash to its name, so one file per name, shared by every uploader, is safe: nobody can plant other
bytes under a name. It is stored uncompressed, its chunk offsets after the data (one file, renamed
into place whole), so rebuilding a file is seeks and copies, not a second decompression.

A shard then rebuilds each file it lists into :class:`~adapterhub.hubformat.lfs_objects.LfsObjects`
(through an :class:`~adapterhub.hubformat.lfs_objects.LfsReceiver`, which keeps the file only if
its sha256 is the one the shard declared): from there the commit takes it exactly as it takes an
object uploaded through the LFS basic transfer.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO

from adapterhub.errors import InvalidAdapterError, UploadTooLargeError
from adapterhub.hubformat.lfs_objects import LfsObjects, remove_untouched
from adapterhub.hubformat.xet import XetFile, hash_hex, parse_xorb

__all__ = ["XetXorbs"]

_MAGIC = b"AHXORB1\n"
_COPY = 4 << 20


class XetXorbs:
    """The verified xorbs of one home (``<home>/uploads/xet``), shared by every worker on it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, xorb: bytes) -> Path:
        return self.root / hash_hex(xorb)

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
        """Remove xorbs (and partial writes) untouched for ``grace_seconds``; returns each and its size."""
        return remove_untouched(self.root, grace_seconds)
