"""Each concurrent run gets its own unprivileged uid and gid from a range no account uses
(SANDBOX_UID_BASE, SANDBOX_UID_COUNT): per-user kernel state (process counts, inotify, the user
keyring) is then never shared between two runs, nor with the worker. A slot is held by an flock
on a file in a root-only directory, so worker processes on one host never hand out the same uid,
and a crashed worker's slots free themselves.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path


class NoFreeUid(RuntimeError):
    pass


class UidPool:
    def __init__(self, base: int, count: int, lock_dir: Path | None = None) -> None:
        if base < 1000 or count < 1:
            raise ValueError("sandbox uids start at 1000 or above")
        self.base, self.count = base, count
        self.dir = lock_dir or Path(tempfile.gettempdir()) / f"specmill-sandbox-uids-{os.geteuid()}"
        self.dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self._mutex = threading.Lock()

    @contextmanager
    def claim(self):
        """A free uid for the length of the block."""
        with self._mutex:
            for slot in range(self.count):
                fd = os.open(self.dir / f"slot-{slot}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                break
            else:
                raise NoFreeUid(f"all {self.count} sandbox uids are in use")
        try:
            yield self.base + slot
        finally:
            os.close(fd)  # releases the lock
