"""``torch_threads``: run a block with a given number of torch intra-op threads.

It lives here, below every engine, because merges (one thread: they are memory-bound) and
evaluation (all cores) both set it; torch is imported only when a count is given.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from adapterhub.errors import InvalidParameterError


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for a block and restore them (``None``: leave as is).

    Raises:
        InvalidParameterError: ``threads`` is below 1.
    """
    if threads is None:
        yield
        return
    if threads < 1:
        raise InvalidParameterError(f"threads must be at least 1, got {threads}")
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
