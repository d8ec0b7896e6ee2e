"""The pidfile of twistd's ``--pidfile``: written at start, removed at exit, never stolen."""

from __future__ import annotations

import os

from .errors import StartupError


class PidFile:
    """``write()`` refuses a file that names another live process; ``remove()`` only removes
    the file while it still names this process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._written = False

    def write(self) -> None:
        if not self.path:
            return
        try:
            with open(self.path, encoding="ascii") as fh:
                old = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            old = 0
        if old and old != os.getpid():
            try:
                os.kill(old, 0)
            except ProcessLookupError:
                pass  # a stale file from a process that is gone
            except PermissionError:  # alive, owned by someone else
                raise StartupError(f"--pidfile {self.path}: process {old} is running") from None
            else:
                raise StartupError(f"--pidfile {self.path}: process {old} is running") from None
        try:
            with open(self.path, "w", encoding="ascii") as fh:
                fh.write(f"{os.getpid()}\n")
        except OSError as exc:
            raise StartupError(f"--pidfile {self.path}: {exc.strerror or exc}") from None
        self._written = True

    def remove(self) -> None:
        if not self._written:
            return
        try:
            with open(self.path, encoding="ascii") as fh:
                mine = fh.read().strip() == str(os.getpid())
            if mine:
                os.unlink(self.path)
        except OSError:
            pass
