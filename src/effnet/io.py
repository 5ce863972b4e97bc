"""Writing files so that a crash never leaves a half-written one: temp file beside it, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is deleted.

    The rename is atomic on POSIX, so readers see either the old file or the complete new one.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file path")
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; the result should not be
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_synced(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` and fsync, so the bytes are on disk before a rename points at them."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating the folder if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        write_bytes_synced(tmp, data)
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
