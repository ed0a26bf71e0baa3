"""Streaming parser of the hub's NDJSON commit body.

``huggingface_hub`` sends a commit as one JSON object per line: a ``header`` line, then one line per
operation. A ``file`` line carries the whole file inline, base64-encoded, in its ``content`` string
(json.dumps order puts it *before* ``path``), so one line can be hundreds of megabytes. This parser
never holds such a line: outside the ``content`` string it keeps the small rest of the line (the
"skeleton", bounded by ``max_line_bytes``), and the ``content`` string itself is decoded from
base64 as it arrives and streamed into a staging file. When the line ends, the skeleton (with an
empty ``content``) is parsed with ``json.loads`` and the staged file gets its path. An ``lfsFile``
line carries no bytes: it names an object uploaded before (LFS batch API) by its sha256.

Base64 contains no character that JSON must escape, so the end of ``content`` is simply the next
``"``; the only escape accepted inside it is ``\\/`` (some encoders escape slashes).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapterhub.errors import InvalidAdapterError, InvalidRepoPathError
from adapterhub.hubformat.lfs_objects import check_oid
from adapterhub.hubformat.staging import StagedWriter, UploadStaging

__all__ = ["CommitBodyParser"]

_QUOTE, _BACKSLASH, _NEWLINE = 0x22, 0x5C, 0x0A


class _Base64Sink:
    """Decodes a base64 string that arrives in pieces and writes the bytes to a staged file."""

    def __init__(self, writer: StagedWriter) -> None:
        self.writer = writer
        self._pending = b""
        self._escape = False

    def _unescape(self, seg: bytes) -> bytes:
        if self._escape:
            seg = b"\\" + seg
            self._escape = False
        if seg.endswith(b"\\") and not seg.endswith(b"\\\\"):
            self._escape = True
            seg = seg[:-1]
        out = seg.replace(b"\\/", b"/")
        if b"\\" in out:
            raise InvalidAdapterError("a file's content is not valid base64 (unexpected escape in the JSON string)")
        return out

    def write(self, seg: bytes) -> None:
        if self._escape or b"\\" in seg:
            seg = self._unescape(seg)
        data = self._pending + seg if self._pending else seg
        cut = len(data) - len(data) % 4
        if cut:
            try:
                self.writer.write(binascii.a2b_base64(data[:cut], strict_mode=True))
            except binascii.Error as e:
                raise InvalidAdapterError(f"a file's content is not valid base64 ({e})") from None
        self._pending = data[cut:]

    def finish(self) -> StagedWriter:
        if self._pending or self._escape:
            raise InvalidAdapterError("a file's content is not valid base64 (its length is not a multiple of 4)")
        return self.writer


class CommitBodyParser:
    """Feed the raw body in chunks (``feed``), then ``close``; operations land in ``staging``.

    Args:
        staging: where files go (its size limit applies to decoded bytes).
        max_line_bytes: most bytes of a line outside file contents (header, paths, …).
        lfs_source: where the object with a given sha256 is (an LFS upload or a stored blob), or
            None; without it every ``lfsFile`` line is refused.

    Attributes:
        header: the commit's header value (``summary``, ``description``, ``parentCommit``).

    Raises (from ``feed``/``close``):
        InvalidAdapterError: malformed or truncated body, invalid base64, unknown operations, an
            ``lfsFile`` naming an object that was not uploaded.
        InvalidRepoPathError, ForbiddenFileError, UploadTooLargeError: from the staging.
    """

    def __init__(
        self,
        staging: UploadStaging,
        *,
        max_line_bytes: int = 1 << 20,
        lfs_source: Callable[[str], Path | None] | None = None,
    ) -> None:
        self.staging = staging
        self.lfs_source = lfs_source
        self.lfs_oids: list[str] = []  # objects this commit took from the LFS area
        self.max_line_bytes = max_line_bytes
        self.header: dict[str, Any] | None = None
        self.operations = 0
        self._line_no = 0
        self._reset_line()

    def _reset_line(self) -> None:
        self._skeleton = bytearray()
        self._in_string = False
        self._escape = False
        self._string_start = 0
        self._last_string: bytes | None = None
        self._pending_key: bytes | None = None
        self._depth = 0
        self._content: _Base64Sink | None = None  # streaming a content string right now
        self._done_sink: _Base64Sink | None = None  # the finished content string of this line

    def feed(self, data: bytes) -> None:
        """Consume the next piece of the body."""
        pos, n = 0, len(data)
        while pos < n:
            if self._content is not None:
                quote = data.find(b'"', pos)
                end = n if quote == -1 else quote
                if end > pos:
                    self._content.write(data[pos:end])
                if quote == -1:
                    return
                self._done_sink, self._content = self._content, None
                self._skeleton.append(_QUOTE)
                pos = quote + 1
                continue
            pos = self._scan_skeleton(data, pos, n)

    def _scan_skeleton(self, data: bytes, pos: int, n: int) -> int:
        """Scan the small part of a line byte by byte until a content string starts or input ends."""
        skeleton = self._skeleton
        while pos < n:
            b = data[pos]
            pos += 1
            if self._in_string:
                skeleton.append(b)
                if self._escape:
                    self._escape = False
                elif b == _BACKSLASH:
                    self._escape = True
                elif b == _QUOTE:
                    self._in_string = False
                    self._last_string = bytes(skeleton[self._string_start : -1])
            elif b == _NEWLINE:
                self._finish_line()
                skeleton = self._skeleton
                continue
            else:
                skeleton.append(b)
                if b == _QUOTE:
                    if self._pending_key == b"content" and self._depth == 2:
                        if self._done_sink is not None:
                            raise InvalidAdapterError(f"commit line {self._line_no + 1} has two 'content' values")
                        self._pending_key = None
                        self._content = _Base64Sink(self.staging.writer())
                        return pos
                    self._in_string = True
                    self._string_start = len(skeleton)
                elif b == 0x3A:  # ':' follows a key
                    self._pending_key, self._last_string = self._last_string, None
                elif b in b"{[":
                    self._depth += 1
                    self._pending_key = None
                elif b in b"}]":
                    self._depth -= 1
                    self._pending_key = None
                elif b == 0x2C:  # ','
                    self._pending_key = None
            if len(skeleton) > self.max_line_bytes:
                raise InvalidAdapterError(
                    f"commit line {self._line_no + 1} is longer than {self.max_line_bytes} bytes outside file contents"
                )
        return pos

    def _finish_line(self) -> None:
        self._line_no += 1
        if self._in_string or self._content is not None:
            raise InvalidAdapterError(f"commit line {self._line_no} ends inside a string (truncated body?)")
        raw = bytes(self._skeleton).strip()
        sink = self._done_sink
        self._reset_line()
        if not raw:
            if sink is not None:
                raise InvalidAdapterError(f"commit line {self._line_no} is malformed")
            return
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InvalidAdapterError(f"commit line {self._line_no} is not valid JSON ({e.msg})") from None
        except UnicodeDecodeError:
            raise InvalidAdapterError(f"commit line {self._line_no} is not valid JSON (not UTF-8 text)") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("value"), dict):
            raise InvalidAdapterError(f"commit line {self._line_no} must be an object with 'key' and 'value'")
        self._apply(obj["key"], obj["value"], sink)

    def _apply(self, key: Any, value: dict[str, Any], sink: _Base64Sink | None) -> None:
        if key != "file" and sink is not None:
            raise InvalidAdapterError(f"commit line {self._line_no}: only 'file' operations carry content")
        if key == "header":
            if self.header is not None or self.operations:
                raise InvalidAdapterError("the commit header must be the first line, and only one")
            self.header = value
            return
        if self.header is None:
            raise InvalidAdapterError("the commit body must start with a header line")
        if key not in ("file", "lfsFile", "deletedFile", "deletedFolder"):
            raise InvalidAdapterError(
                f"unknown commit operation {key!r}; expected file, lfsFile, deletedFile or deletedFolder"
            )
        self.operations += 1
        path = value.get("path")
        if not isinstance(path, str):
            raise InvalidRepoPathError(f"commit line {self._line_no}: a '{key}' operation needs a 'path' string")
        if key == "lfsFile":
            self._apply_lfs(path, value)
        elif key == "file":
            if value.get("encoding", "base64") != "base64":
                raise InvalidAdapterError(f"file '{path}': only base64 content encoding is supported")
            if sink is None:  # content not where the streaming parser looks (e.g. nested oddly)
                content = value.get("content")
                if not isinstance(content, str):
                    raise InvalidAdapterError(f"file '{path}' has no base64 'content'")
                sink = _Base64Sink(self.staging.writer())
                sink.write(content.encode("ascii", errors="replace"))
            self.staging.add(path, sink.finish())
        else:
            self.staging.delete(path, folder=key == "deletedFolder")

    def _apply_lfs(self, path: str, value: dict[str, Any]) -> None:
        """Stage an object uploaded before the commit (``{path, algo: sha256, oid, size}``)."""
        if value.get("algo", "sha256") != "sha256":
            raise InvalidAdapterError(f"file '{path}': only sha256 LFS objects are supported")
        oid = check_oid(value.get("oid"))
        size = value.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise InvalidAdapterError(f"file '{path}': an LFS 'size' must be a non-negative integer")
        source = self.lfs_source(oid) if self.lfs_source is not None else None
        if source is None:
            raise InvalidAdapterError(
                f"file '{path}': LFS object {oid} was not uploaded to this hub; upload it through the LFS batch API "
                "first, or send the file inline"
            )
        self.staging.add_object(path, source, oid, size)
        self.lfs_oids.append(oid)

    def close(self) -> None:
        """The body ended: a last line without a newline is accepted only if it is complete."""
        if self._content is not None or self._in_string:
            raise InvalidAdapterError("the commit body ends inside a string: the upload was truncated")
        if bytes(self._skeleton).strip():
            self._finish_line()
        if self.header is None:
            raise InvalidAdapterError("the commit body is empty or has no header line")
