"""The workers' connection counts, in one small shared memory block (one int64 per worker).

The supervisor creates the block (`LoadTable.create`) and passes its file descriptor to every
worker (`LoadTable.attach`). Each worker writes only its own slot; the supervisor marks a dead
worker's slot `IDLE_SLOT` so that nobody leaves connections to it. Plain standard library.
"""

from __future__ import annotations

import mmap
import os

__all__ = ["IDLE_SLOT", "LoadTable"]

IDLE_SLOT = 2**62  # the load of a dead worker: never the least loaded
_SLOT_BYTES = 8


class LoadTable:
    """Per-worker connection counts shared between processes."""

    def __init__(self, fd: int, count: int) -> None:
        self.fd: int | None = fd
        self.count = count
        self._loads = memoryview(mmap.mmap(fd, _SLOT_BYTES * count)).cast("q")

    @classmethod
    def create(cls, count: int) -> LoadTable:
        """A new table, every slot idle; `OSError` where there is no memfd."""
        fd = os.memfd_create("fastforward-loads")
        try:
            os.ftruncate(fd, _SLOT_BYTES * count)
            table = cls(fd, count)
        except BaseException:
            os.close(fd)
            raise
        for i in range(count):
            table[i] = IDLE_SLOT
        return table

    @classmethod
    def attach(cls, fd: int, count: int) -> LoadTable:
        """A worker's view of the supervisor's table (the descriptor is closed: the mapping
        stays)."""
        table = cls(fd, count)
        table.close_fd()
        return table

    def __getitem__(self, index: int) -> int:
        return int(self._loads[index])

    def __setitem__(self, index: int, value: int) -> None:
        self._loads[index] = value

    def others(self, index: int) -> list[int]:
        """Every worker's load but ``index``'s."""
        return [v for i, v in enumerate(self._loads) if i != index]

    def close_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
