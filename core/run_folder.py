"""The run folder ``<output_root>/<name>/``: claimed only when a run is known to start, locked while it runs.

Start-up order (every trainer): build and check everything (config, data, networks, optimizer,
resume checkpoint) without touching the disk, then :meth:`RunFolder.open`:

1. lock ``<run>/.lock`` (:class:`common_utils.folders.FolderLock`, held until the process ends,
   however it ends: loader workers orphaned by a ``kill -9`` do not keep it): a second process
   with the same run name refuses to start and names the running one (pid, host, start time,
   command);
2. a new run (no ``--resume``) whose folder holds any file of an earlier run (checkpoints, or
   only the logs of a run that crashed before its first checkpoint) moves that folder aside to
   ``<name>_archived_<YYYYmmdd_HHMMSS>`` first, so nothing is ever overwritten or appended to;
   the unfinished ``.*.tmp`` files of a checkpoint write that was killed are deleted;
3. write ``config.yaml`` (resolved; atomically), ``command.txt`` and ``environment.txt`` (git
   revision, Python/torch/CUDA versions, machine), after checking the disk takes a write.

A start that fails before step 1 leaves the disk exactly as it was; one that fails while writing
step 3 in a folder it created (a full disk) removes that folder again.
"""
from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from common_utils.checkpoint import file_mode_mask
from common_utils.folders import LOCK_NAME, FolderLock, archive_folder, holds_files, remove_stale_temporaries
from data.paths import REPO_ROOT, resolve_path
from foundation.errors import UserError

__all__ = ["LOCK_NAME", "RunFolder", "config_yaml", "environment_banner", "git_revision", "write_text_atomic"]


def git_revision(repo: Path = REPO_ROOT) -> str:
    """``<commit>`` (plus ``-dirty`` with uncommitted changes), or ``unknown`` outside a git checkout."""
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_banner(device: torch.device) -> dict[str, Any]:
    """What a result depends on besides the config: code revision, software, machine."""
    info: dict[str, Any] = {
        "git_revision": git_revision(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    return info


class RunFolder:
    """One run's folder: its path (checked at once), then :meth:`open` (see the module docstring)."""

    def __init__(self, output_root: str, name: str, resume: bool) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or name in (".", ".."):
            raise UserError(f"config key 'name' must be a plain folder name (letters, digits, _ . -), got '{name}'")
        self.path = Path(resolve_path(output_root)) / name
        self.name = name
        self.resume = resume
        self._lock = FolderLock(self.path, "run folder", holder_kind="run")
        self.archived: Path | None = None

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def _check_writable(self) -> None:
        probe = self.path.parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise UserError(f"cannot write to the output folder {self.path}: {probe} is not a writable folder; "
                            f"set output_root to a writable folder")

    def open(self, config_text: str, banner: dict[str, Any]) -> None:
        """Lock, archive an earlier run (new runs only), write config/command/environment (rank 0)."""
        self._check_writable()
        created = not self.path.exists()
        try:
            if not created:
                self._lock.take()  # refuses while another process runs in this folder
                # a new run never writes beside an earlier one's files, checkpoints or not (a run that
                # crashed before its first checkpoint left train.log and scalars.jsonl to be appended to)
                if not self.resume and holds_files(self.path):
                    self._archive()
            self.path.mkdir(parents=True, exist_ok=True)
            if not self._lock.held:
                self._lock.take()
            removed, freed = remove_stale_temporaries(self.path)
            if removed:
                print(f"note: removed {removed} unfinished temporary file(s) ({freed / 2 ** 20:.1f} MiB) that a "
                      f"killed run left in {self.path}", file=sys.stderr)
            self.checkpoints.mkdir(exist_ok=True)
            self.logs.mkdir(exist_ok=True)
            write_text_atomic(self.path / "config.yaml", config_text)
            write_text_atomic(self.path / "command.txt", " ".join(sys.argv) + "\n")
            write_text_atomic(self.path / "environment.txt",
                              "".join(f"{k}: {v}\n" for k, v in banner.items()))
        except OSError as exc:
            if created:  # leave the disk as it was: no half-made folder, no .lock
                self.close()
                shutil.rmtree(self.path, ignore_errors=True)
            raise UserError(f"cannot write to the run folder {self.path}: {exc.strerror or exc} "
                            f"(is the disk full?)") from None

    def _archive(self) -> None:
        self.archived = archive_folder(self.path)  # the lock file moves with it; we still hold it
        self._lock.release()
        print(f"note: an earlier run was in {self.path}; moved it to {self.archived}", file=sys.stderr)

    def close(self) -> None:
        """Release the lock (the process ending releases it too)."""
        self._lock.release()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over (never a half-written file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        os.chmod(tmp, 0o666 & ~file_mode_mask())  # mkstemp makes 0600 files
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def config_yaml(data: dict[str, Any]) -> str:
    """The resolved config as YAML text (every key the run's trainer reads, with its value)."""
    return yaml.safe_dump({k: v for k, v in data.items() if k != "_source"}, sort_keys=False)
