"""One run per output folder at a time: a lock file holding the owner's pid, host and start time.

Taken with O_EXCL before anything else is written (so of two runs started together, one wins), released when the
run ends however it ends (SIGTERM and Ctrl-C included: training/cli.py turns them into exceptions). A lock whose
process is gone (killed with SIGKILL, a crashed machine) is reported and taken over.
"""

import json
import logging
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from training.checkpoints import check_writable

logger = logging.getLogger(__name__)

LOCK = ".run.lock"


class FolderInUseError(ValueError):
    """Another live run holds the output folder."""


@contextmanager
def run_lock(output_dir: str | Path, take: bool = True):
    """Hold output_dir's lock for the block (`take=False`: a DDP process other than the main one, which holds it).
    A folder that the block created and left without a file is removed at the end: a refused run leaves nothing."""
    folder = Path(output_dir)
    if not take:
        yield
        return
    check_writable(folder)
    made = [path for path in (folder, *folder.parents) if not path.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    _take(path)
    try:
        yield
    finally:
        if _owner(path).get("pid") == os.getpid():
            path.unlink()
        for empty in made:  # the deepest first
            if empty.is_dir() and not any(p.is_file() for p in empty.rglob("*")):
                shutil.rmtree(empty)


def _take(path: Path) -> None:
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            with os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY), "w") as file:
                json.dump(mine, file)
            return
        except FileExistsError:
            owner = _owner(path)
            if _alive(owner):
                elsewhere = owner.get("host") != mine["host"]
                raise FolderInUseError(
                    f"{path.parent} is in use by another run (pid {owner.get('pid')} on {owner.get('host')}, since "
                    f"{owner.get('started')}): wait for it to end, or choose another --output_dir"
                    + (f" (if that run is gone, delete {path})" if elsewhere else "")) from None
            logger.warning("%s: removing the stale lock of pid %s on %s (started %s), no longer running", path.parent,
                           owner.get("pid"), owner.get("host"), owner.get("started"))
            path.unlink(missing_ok=True)
    raise FolderInUseError(f"{path.parent}: another run took the lock as this one started; choose another "
                           "--output_dir")


def _owner(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):  # gone, or half-written by a process killed mid-write
        return {}
    return owner if isinstance(owner, dict) else {}


def _alive(owner: dict) -> bool:
    """Whether the lock's process still runs; a lock of another host is taken to be alive (it cannot be checked)."""
    if owner.get("host") != socket.gethostname():
        return bool(owner)
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
