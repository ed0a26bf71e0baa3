"""The Xet storage formats a hub receives uploads in: xorbs (chunks), shards (file manifests), hashes.

Why this exists: ``huggingface_hub`` 2.x uploads every ``lfs`` file through Xet storage whenever
``hf_xet`` is installed (it is by default), without asking the server; the LFS batch API is only
its fallback. A hub that the default client can push large files to must therefore accept Xet
uploads. Only the upload half is needed here: this hub serves files over plain ``/resolve/``.

An upload is: the file cut into content-defined chunks (~64 KiB), chunks packed into xorbs
(~64 MiB, each chunk LZ4-compressed or stored), each xorb posted under its hash, then one shard
that lists, per file, its sha256 and the xorb chunk ranges it is made of. This module parses both
with hard bounds and checks every hash the server can check itself:

- a xorb's hash is recomputed from its chunks (blake3 keyed hashes, the Merkle tree of the Xet
  spec), so a stored xorb always holds exactly the bytes its name says, whoever sent it;
- a file rebuilt from a shard must have the sha256 the shard declares (checked by the caller, the
  same check as for an LFS object), so a wrong manifest stores nothing.

The spec: https://huggingface.co/docs/xet (xorb, shard, hashing, api). Nothing here does I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from adapterhub.errors import InvalidAdapterError

__all__ = [
    "MAX_SHARD_BYTES",
    "SHARD_TAG",
    "MAX_XORB_BYTES",
    "XetFile",
    "XetTerm",
    "XorbChunks",
    "hash_from_hex",
    "hash_hex",
    "parse_shard",
    "parse_xorb",
    "xorb_hash",
]

MAX_XORB_BYTES = 64 << 20  # the spec's limit on a serialized xorb
MAX_CHUNK_BYTES = 128 << 10  # the spec's limit on one chunk, uncompressed
MAX_SHARD_BYTES = 16 << 20  # a manifest: ~48 bytes a term; 16 MiB lists ~300k terms (~20 TB)

_DATA_KEY = bytes(
    [102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28,
     157, 228, 33, 16, 155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41]
)  # fmt: skip
_INTERNAL_NODE_KEY = bytes(
    [1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230,
     93, 221, 83, 111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63]
)  # fmt: skip
_BRANCHING = 4  # mean branching factor of the Merkle tree over chunk hashes

_COMPRESSION_NONE, _COMPRESSION_LZ4, _COMPRESSION_BG4_LZ4 = 0, 1, 2
SHARD_TAG = bytes(
    [72, 70, 82, 101, 112, 111, 77, 101, 116, 97, 68, 97, 116, 97, 0, 85,
     105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169]
)  # fmt: skip  # "HFRepoMetaData\0" and 17 fixed bytes: the shard header's magic
_TAG_LEN, _ENTRY = len(SHARD_TAG), 48
_BOOKEND = b"\xff" * 32
_FLAG_VERIFICATION = 1 << 31
_FLAG_METADATA_EXT = 1 << 30


def hash_hex(raw: bytes) -> str:
    """A 32-byte Xet hash as the spec writes it: each 8-byte word as a little-endian u64, in hex."""
    if len(raw) != 32:
        raise ValueError("a Xet hash is 32 bytes")
    return "".join(raw[i : i + 8][::-1].hex() for i in range(0, 32, 8))


def hash_from_hex(text: str) -> bytes:
    """The inverse of :func:`hash_hex`.

    Raises:
        InvalidAdapterError: not 64 lowercase hex digits (it becomes a file name: nothing may slip in).
    """
    if not isinstance(text, str) or len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise InvalidAdapterError("a Xet hash must be 64 lowercase hex digits")
    return b"".join(bytes.fromhex(text[i : i + 16])[::-1] for i in range(0, 64, 16))


def _blake3(data: bytes, key: bytes) -> bytes:
    from blake3 import blake3  # imported on first use: only Xet uploads need it

    return blake3(data, key=key).digest()


def chunk_hash(data: bytes) -> bytes:
    """A chunk's Xet hash: blake3 keyed with the spec's data key."""
    return _blake3(data, _DATA_KEY)


def _next_cut(nodes: list[tuple[bytes, int]], start: int) -> int:
    """Where the group of nodes starting at ``start`` ends: a node whose hash is 0 mod 4 (as a
    little-endian u64, the last word) closes it, after at least 2 and at most 9 nodes."""
    left = len(nodes) - start
    if left <= 2:
        return len(nodes)
    end = min(2 * _BRANCHING + 1, left)
    for i in range(2, end):
        last_word = int.from_bytes(nodes[start + i][0][24:32], "little")
        if last_word % _BRANCHING == 0:
            return start + i + 1
    return start + end


def xorb_hash(chunks: list[tuple[bytes, int]]) -> bytes:
    """The Merkle root over ``(chunk hash, chunk size)`` pairs: a xorb's name in the Xet protocol."""
    if not chunks:
        return bytes(32)
    nodes = list(chunks)
    while len(nodes) > 1:
        merged: list[tuple[bytes, int]] = []
        start = 0
        while start < len(nodes):
            cut = _next_cut(nodes, start)
            group = nodes[start:cut]
            text = "".join(f"{hash_hex(h)} : {size}\n" for h, size in group)
            merged.append((_blake3(text.encode(), _INTERNAL_NODE_KEY), sum(size for _, size in group)))
            start = cut
        nodes = merged
    return nodes[0][0]


@dataclass(frozen=True)
class XorbChunks:
    """What a parsed xorb holds: where each uncompressed chunk starts, and each chunk's hash.

    ``offsets`` has one more entry than there are chunks (the end), so chunk ``i`` is bytes
    ``offsets[i]:offsets[i + 1]`` of the chunks written back to back.
    """

    offsets: list[int]
    hashes: list[bytes]

    @property
    def count(self) -> int:
        return len(self.offsets) - 1


def _ungroup4(grouped: bytes) -> bytes:
    """Undo byte grouping: groups 1..4 (the first ``n % 4`` one byte longer) back to interleaved."""
    n = len(grouped)
    base, extra = divmod(n, 4)
    sizes = [base + (1 if g < extra else 0) for g in range(4)]
    out = bytearray(n)
    pos = 0
    for g, size in enumerate(sizes):
        out[g::4] = grouped[pos : pos + size]
        pos += size
    return bytes(out)


def _decompress(scheme: int, payload: bytes, size: int) -> bytes:
    """One chunk's bytes; never more than ``size`` are produced (an LZ4 bomb stops there)."""
    from lz4.frame import LZ4FrameDecompressor  # imported on first use: only Xet uploads need it

    if scheme == _COMPRESSION_NONE:
        data = payload
    elif scheme in (_COMPRESSION_LZ4, _COMPRESSION_BG4_LZ4):
        decompressor = LZ4FrameDecompressor()
        try:
            data = decompressor.decompress(payload, max_length=size)
        except RuntimeError as exc:
            raise InvalidAdapterError(f"a xorb chunk is not valid LZ4 ({exc})") from None
        if not decompressor.eof:
            raise InvalidAdapterError(f"a xorb chunk's LZ4 data is truncated or holds more than the {size} bytes its header says")
        if scheme == _COMPRESSION_BG4_LZ4:
            data = _ungroup4(data)
    else:
        raise InvalidAdapterError(f"a xorb chunk uses compression scheme {scheme}, which this hub does not know")
    if len(data) != size:
        raise InvalidAdapterError(f"a xorb chunk holds {len(data)} bytes, its header says {size}")
    return data


def parse_xorb(body: bytes, expected_hash: bytes, sink: Callable[[bytes], object]) -> XorbChunks:
    """Decompress every chunk of a serialized xorb, in order, into ``sink``, and check that the
    chunks hash to ``expected_hash`` (the caller keeps what ``sink`` got only if this returns).

    Only one chunk is held uncompressed at a time. A trailing footer (chunk boundaries and hashes that some clients append) is ignored: the
    chunks themselves are what the hash covers.

    Raises:
        InvalidAdapterError: over the size limit, truncated, an unknown version or compression,
            a chunk over 128 KiB, or a hash that does not match.
    """
    if len(body) > MAX_XORB_BYTES:
        raise InvalidAdapterError(f"a xorb may be at most {MAX_XORB_BYTES} bytes; this one is {len(body)}")
    offsets, hashes = [0], []
    pos = 0
    while pos + 8 <= len(body) and body[pos] == 0:  # version 0 chunk headers; a footer starts otherwise
        compressed = int.from_bytes(body[pos + 1 : pos + 4], "little")
        scheme = body[pos + 4]
        size = int.from_bytes(body[pos + 5 : pos + 8], "little")
        if size > MAX_CHUNK_BYTES or compressed > MAX_CHUNK_BYTES + 1024 or pos + 8 + compressed > len(body):
            raise InvalidAdapterError("a xorb chunk header is malformed (a chunk over 128 KiB, or past the end)")
        data = _decompress(scheme, body[pos + 8 : pos + 8 + compressed], size)
        sink(data)
        hashes.append(chunk_hash(data))
        offsets.append(offsets[-1] + size)
        pos += 8 + compressed
    if not hashes:
        raise InvalidAdapterError("a xorb must hold at least one chunk")
    if pos != len(body) and not body[pos:].startswith(b"XETBLOB"):
        raise InvalidAdapterError("a xorb holds bytes that are neither chunks nor a footer")
    actual = xorb_hash([(h, offsets[i + 1] - offsets[i]) for i, h in enumerate(hashes)])
    if actual != expected_hash:
        raise InvalidAdapterError(
            f"the xorb's chunks hash to {hash_hex(actual)}, not to {hash_hex(expected_hash)} as its name says"
        )
    return XorbChunks(offsets, hashes)


@dataclass(frozen=True)
class XetTerm:
    """One piece of a file: chunks ``[start, end)`` of a xorb, ``size`` bytes uncompressed."""

    xorb: bytes
    start: int
    end: int
    size: int


@dataclass(frozen=True)
class XetFile:
    """A file a shard registers: its Xet hash, its sha256 and the pieces it is rebuilt from."""

    file_hash: bytes
    sha256: str
    terms: tuple[XetTerm, ...]

    @property
    def size(self) -> int:
        return sum(t.size for t in self.terms)


def parse_shard(body: bytes) -> list[XetFile]:
    """The files of an uploaded shard (its file info section; the xorb listing is not needed).

    Every file must carry its sha256 (the metadata extension, required for uploads by the spec):
    it is how the commit names the file, and how the rebuilt bytes are checked.

    Raises:
        InvalidAdapterError: over the size limit, a bad header, truncated, a file without sha256,
            or a term with an empty or reversed chunk range.
    """
    if len(body) > MAX_SHARD_BYTES:
        raise InvalidAdapterError(f"a shard may be at most {MAX_SHARD_BYTES} bytes; this one is {len(body)}")
    if len(body) < _TAG_LEN + 16:
        raise InvalidAdapterError("a shard must start with a 48-byte header")
    (version,) = struct.unpack_from("<Q", body, _TAG_LEN)
    if body[:_TAG_LEN] != SHARD_TAG:
        raise InvalidAdapterError("this is not a Xet shard (its header lacks the shard magic)")
    if version != 2:
        raise InvalidAdapterError(f"shard header version {version} is not supported (2 is)")
    pos = _TAG_LEN + 16
    files: list[XetFile] = []

    def entry(at: int) -> bytes:
        if at + _ENTRY > len(body):
            raise InvalidAdapterError("the shard ends inside its file info section")
        return body[at : at + _ENTRY]

    while True:
        head = entry(pos)
        if head[:32] == _BOOKEND:
            return files
        flags, count = struct.unpack_from("<II", head, 32)
        pos += _ENTRY
        if count == 0 or count > len(body) // _ENTRY:
            raise InvalidAdapterError("a shard file entry lists no terms, or more than the shard holds")
        terms = []
        for _ in range(count):
            raw = entry(pos)
            _, size, start, end = struct.unpack_from("<IIII", raw, 32)
            if end <= start:
                raise InvalidAdapterError("a shard term has an empty chunk range")
            terms.append(XetTerm(raw[:32], start, end, size))
            pos += _ENTRY
        if flags & _FLAG_VERIFICATION:
            pos += count * _ENTRY
        if not flags & _FLAG_METADATA_EXT:
            raise InvalidAdapterError("every file of an uploaded shard must carry its sha256 (metadata extension)")
        sha256 = hash_hex(entry(pos)[:32])  # stored as a Xet hash: four little-endian words
        pos += _ENTRY
        files.append(XetFile(head[:32], sha256, tuple(terms)))
