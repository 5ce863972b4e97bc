"""Writing files so that a crash never leaves a half-written one: temp file beside it, then rename.

The one writer of the package: weights, graph files, train checkpoints, exports and analysis results
all go through :func:`atomic_output` (or :func:`write_atomic` for bytes).  Finished files get the
mode any other tool would give them (``0o666 & ~umask``), whatever the code that filled the temp file
did to it.  A process killed mid-write leaves only a temp file named ``.<name>.<random>.tmp``;
:func:`remove_stale_temp_files` clears those from a folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

# mkstemp's names: prefix + 8 characters of [a-z0-9_] + suffix; see atomic_output.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is deleted.

    The body may write the temp file in any way, even by replacing it (safetensors' ``save_file``
    does).  Afterwards its bytes are fsynced and its mode set to ``0o666 & ~umask``, then it is
    renamed over ``path``: the rename is atomic on POSIX, so readers see either the old file or the
    complete new one.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file path")
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        # After the body, not before: a writer that replaces the file would undo an earlier chmod,
        # and mkstemp's file is private (0o600).
        os.chmod(tmp, 0o666 & ~current_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes are on disk before a rename points at them
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating the folder if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path


def check_writable(path: str | os.PathLike, flag: str = "") -> Path:
    """Fail now, before the work, if ``path`` could not be written later.

    The nearest folder that exists on the way to ``path`` must be a folder this process may write in
    (missing folders below it are created by the writers).  ``flag`` names the option that chooses
    the path, for the error message.
    """
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    where = f" (choose another with {flag})" if flag else ""
    if not folder.is_dir():
        raise ValueError(f"cannot write {path}: {folder} is not a folder{where}")
    try:
        writable = os.access(folder, os.W_OK | os.X_OK)
        if writable:  # access() is only a hint (root, read-only mounts): try a real file
            with tempfile.TemporaryFile(dir=folder):
                pass
    except OSError:
        writable = False
    if not writable:
        raise ValueError(f"cannot write {path}: folder {folder} is read-only{where}")
    return path


def is_temp_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a temp file of :func:`atomic_output`."""
    return bool(_TEMP_NAME.match(Path(path).name))


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files an interrupted :func:`atomic_output` left in ``folder``; returns them.

    Only call this for a folder no other process is writing to: a live writer's temp file looks the same.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and is_temp_file(p):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
