"""Atomic writes of folders and files: a reader (or a restart after a crash) sees the old version or the new one,
never a mix (files: :func:`atomic_write`, one rename).

The new content is written into a temporary folder beside the target (same filesystem), every file is fsynced,
then the folders are swapped with renames. The old folder is kept (as ``<target>.old-*``) until the new one is in
place, and removed afterwards. A crash between the two renames leaves the target missing but the complete old
folder beside it; :func:`recover_folder` (called on every write, and by the ledger on restart) puts it back.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_folder(root / "model") as tmp:
    ...     _ = (tmp / "weights.bin").write_bytes(b"v1")
    >>> (root / "model" / "weights.bin").read_bytes()
    b'v1'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

_TMP_PREFIX = ".tmp-"
_OLD_MARK = ".old-"


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(str(path), flags)
    except OSError:  # pragma: no cover - some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - directory fsync unsupported (e.g. Windows)
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """fsync every file and directory under ``folder`` (and the folder itself)."""
    root = Path(folder)
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            _fsync_path(Path(dirpath) / f)
        _fsync_path(Path(dirpath))


def _old_copies(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f"{_TMP_PREFIX}{target.name}{_OLD_MARK}*"))


def recover_folder(target: str | os.PathLike) -> str:
    """Finish or roll back an interrupted :func:`atomic_folder` write of ``target``.

    Returns:
        ``"clean"`` (nothing to do), ``"restored"`` (the target was missing: the kept old copy was moved back) or
        ``"cleaned"`` (leftover temporary folders were removed; the target is intact).
    """
    target = Path(target)
    olds = _old_copies(target)
    status = "clean"
    if not target.exists() and olds:
        os.replace(olds[-1], target)
        _fsync_path(target.parent)
        olds = olds[:-1]
        status = "restored"
    leftovers = olds + [
        p for p in target.parent.glob(f"{_TMP_PREFIX}{target.name}-*") if p.is_dir() and _OLD_MARK not in p.name
    ]
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)
        status = "cleaned" if status == "clean" else status
    return status


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Context manager yielding a temporary folder; on normal exit it atomically becomes ``target``.

    On an exception the temporary folder is removed and ``target`` is left untouched.

    Args:
        target: the folder to (re)write. Its parent is created if needed.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "out"
        >>> with atomic_folder(d) as tmp:
        ...     _ = (tmp / "a.txt").write_text("hello")
        >>> sorted(p.name for p in d.iterdir())
        ['a.txt']
    """
    target = Path(target).absolute()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is a file, not a folder: choose another output directory")
    if any(p.exists() and not p.is_dir() for p in target.parents):
        raise NotADirectoryError(f"cannot create {target}: a parent of it is a file, not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{target.name}-", dir=target.parent))
    try:
        yield tmp
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{target.name}{_OLD_MARK}", dir=target.parent))
        os.replace(target, old)  # rename over the empty placeholder folder: the old content is kept whole
    os.replace(tmp, target)
    _fsync_path(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_save(target: str | os.PathLike, write_fn: Callable[[Path], None]) -> Path:
    """Call ``write_fn(tmp_folder)`` and atomically move the result to ``target``; returns ``target``.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "m"
        >>> _ = atomic_save(d, lambda p: (p / "x").write_text("1"))
        >>> (d / "x").read_text()
        '1'
    """
    with atomic_folder(target) as tmp:
        write_fn(tmp)
    return Path(target)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], None], unique: bool = False) -> Path:
    """Write one file atomically: ``write_fn(tmp_path)`` writes a temporary file beside ``path``, which then
    replaces ``path`` in one rename (a reader sees the old file or the new one, never half of one).

    Args:
        path: the file to (re)write; its folder must exist.
        write_fn: writes the content to the path it is given.
        unique: a uniquely named temporary file (``mkstemp``: several processes may write the same file at once;
            it is created with mode 0600), else ``<name>.tmp``.

    Returns:
        ``path``. On an exception the temporary file is removed and ``path`` is left untouched.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "meta.json"
        >>> _ = atomic_write(p, lambda tmp: tmp.write_text("{}"))
        >>> p.read_text(), sorted(x.name for x in p.parent.iterdir())
        ('{}', ['meta.json'])
    """
    path = Path(path)
    if unique:
        fd, name = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    else:
        tmp = path.with_name(path.name + ".tmp")
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str, unique: bool = False) -> Path:
    """:func:`atomic_write` of a text file.

    Example:
        >>> import tempfile, pathlib
        >>> p = atomic_write_text(pathlib.Path(tempfile.mkdtemp()) / "a.txt", "hello")
        >>> p.read_text()
        'hello'
    """
    return atomic_write(path, lambda tmp: tmp.write_text(text), unique=unique)
