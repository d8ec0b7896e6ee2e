"""Which process accepted a loopback TCP connection, read from Linux's /proc.

With ``--workers N`` the kernel hands each connection on the shared listening socket to
whichever worker accepts first. The accepted socket's inode is in ``/proc/net/tcp`` (found by
the two ports) and among the descriptors of the process that holds it. Standard library only:
``bench/spread.py`` and the workers' integration tests share it.
"""

from __future__ import annotations

import os


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process `pid` has open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def accepted_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server side of 127.0.0.1:client_port -> 127.0.0.1:server_port; None
    while it is not accepted yet (or not known)."""
    with open("/proc/net/tcp", encoding="ascii") as fh:
        next(fh)
        for line in fh:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if int(local.split(":")[1], 16) == server_port and (
                int(remote.split(":")[1], 16) == client_port
            ):
                return inode or None
    return None


def owner(server_port: int, client_port: int, pids: dict[int, int]) -> int | None:
    """Which of `pids` (a key: worker id, say, to its pid) accepted the connection from
    `client_port`; None while none has."""
    inode = accepted_inode(server_port, client_port)
    if inode is None:
        return None
    return next((key for key, pid in pids.items() if inode in socket_inodes(pid)), None)
