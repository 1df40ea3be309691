"""Output folders that one process owns: a lock, moving an earlier result aside, stray temporaries.

Run folders (:mod:`core.run_folder`) and evaluation folders (``eval.py --out``,
``eval_with_any_backbone.py --output``) follow the same two rules:

* **one writer**: ``<folder>/.lock`` is locked (``flock``) while a process writes there; a second
  process refuses to start and names the holder (pid, host, start time, command). The lock is
  released when the process ends however it ends (also ``kill -9``): the copies of its file
  descriptor that forked children (DataLoader workers) inherit are closed in each child at fork,
  so orphaned workers that outlive a killed main process for a few seconds do not keep it.
* **nothing stale**: a folder that holds an earlier result is moved aside to
  ``<folder>_archived_<YYYYmmdd_HHMMSS>`` before anything new is written, so new files never sit
  beside old ones and nothing is overwritten.

Standard library only.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import IO

from foundation.errors import UserError

LOCK_NAME = ".lock"

#: file descriptors of the locks this process holds (closed in forked children, see module docstring)
_HELD: set[int] = set()


def _drop_locks_in_child() -> None:
    """After a fork: point the inherited lock descriptors at /dev/null (the parent keeps its lock).

    ``dup2`` instead of ``close`` so that the number stays valid for the child's copy of the file
    object (closing it later then closes /dev/null, not some unrelated file that reused the number).
    """
    if not _HELD:
        return
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    for fd in list(_HELD):
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_locks_in_child)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``<folder>/.lock`` holding who took it."""

    def __init__(self, folder: Path, what: str = "folder", holder_kind: str = "process") -> None:
        self.folder, self.what, self.holder_kind = Path(folder), what, holder_kind
        self._fh: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def take(self) -> None:
        """Lock (the folder must exist); a UserError naming the holder when another process has it."""
        fh = open(self.folder / LOCK_NAME, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UserError(self._busy_message(holder)) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                 f"{' '.join(sys.argv)}\n")
        fh.flush()
        self._fh = fh
        _HELD.add(fh.fileno())

    def _busy_message(self, holder: str) -> str:
        parts = holder.split()
        pid = int(parts[1]) if len(parts) > 3 and parts[0] == "pid" and parts[1].isdigit() else None
        same_host = len(parts) > 3 and parts[3].rstrip(":") == socket.gethostname()
        if pid is not None and same_host and not _pid_alive(pid):
            return (f"the {self.what} {self.folder} is still locked by child processes of pid {pid}, which has "
                    f"ended ({holder}); they exit within seconds: retry shortly")
        return (f"the {self.what} {self.folder} is in use by a running {self.holder_kind} ({holder}); wait for "
                f"it, stop it, or choose another {self.what}")

    def release(self) -> None:
        """Unlock (the process ending unlocks too); the ``.lock`` file stays as a marker."""
        if self._fh is None:
            return
        _HELD.discard(self._fh.fileno())
        try:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
        finally:
            self._fh.close()
            self._fh = None


def archive_folder(folder: Path) -> Path:
    """Move ``folder`` aside to ``<folder>_archived_<stamp>[_n]``; return the new place."""
    stamp = time.strftime("%Y%m%d_%H%M%S")
    target = folder.with_name(f"{folder.name}_archived_{stamp}")
    n = 1
    while target.exists():
        target = folder.with_name(f"{folder.name}_archived_{stamp}_{n}")
        n += 1
    shutil.move(str(folder), str(target))
    return target


def holds_files(folder: Path, ignore: tuple[str, ...] = (LOCK_NAME,)) -> bool:
    """True when ``folder`` holds any file (at any depth) other than those named in ``ignore``."""
    if not folder.is_dir():
        return False
    return any(p.is_file() and p.name not in ignore for p in folder.rglob("*"))


def remove_stale_temporaries(folder: Path) -> tuple[int, int]:
    """Delete the ``.<name>.<random>.tmp`` files that atomic writes leave when a process is killed mid-write.

    Call it only while holding the folder's lock (then no other process is writing them).
    Returns (files removed, bytes freed).
    """
    count = size = 0
    if not folder.is_dir():
        return 0, 0
    for p in folder.rglob(".*.tmp"):
        if p.is_file():
            try:
                n = p.stat().st_size
                p.unlink()
            except OSError:
                continue
            count, size = count + 1, size + n
    return count, size


class OutputFolder:
    """An evaluation output folder claimed by one process (see the module docstring).

    :meth:`claim` locks the folder; a folder that holds an earlier evaluation's files (its
    ``.lock`` marker or a ``summary.json``) is moved aside first; a folder that holds other files
    is refused, so that a new result never sits beside files it did not write.
    """

    def __init__(self, path: Path, what: str = "output folder") -> None:
        self.path, self.what = Path(path), what
        self.lock = FolderLock(self.path, what, holder_kind="evaluation")
        self.archived: Path | None = None

    def claim(self) -> None:
        """Lock the folder (created if needed), moving an earlier evaluation aside first."""
        created = not self.path.exists()
        try:
            if not created:
                earlier = (self.path / LOCK_NAME).is_file() or (self.path / "summary.json").is_file()
                self.lock.take()
                if holds_files(self.path):
                    if not earlier:
                        self.lock.release()
                        (self.path / LOCK_NAME).unlink(missing_ok=True)  # leave the folder as it was
                        raise UserError(f"the {self.what} {self.path} already holds files that an evaluation of "
                                        f"this framework did not write; choose a new or empty folder")
                    self.archived = archive_folder(self.path)  # the lock file moves with it, still held
                    self.lock.release()
                    print(f"note: an earlier result was in {self.path}; moved it to {self.archived}",
                          file=sys.stderr, flush=True)
            self.path.mkdir(parents=True, exist_ok=True)
            if not self.lock.held:
                self.lock.take()
        except OSError as exc:
            self.lock.release()
            raise UserError(f"cannot write to the {self.what} {self.path}: {exc.strerror or exc}") from None

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> OutputFolder:
        """``with OutputFolder(path):`` claims the folder for the block and releases it after, whatever happens."""
        self.claim()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
