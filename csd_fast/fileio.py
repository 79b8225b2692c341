"""Output files that never lose work: atomic writes and a lock on a run's output folder.

**Atomic writes.** :func:`atomic_write` (a file object) and :func:`atomic_path` (a file name, for
writers that want one) write to a temp file in the destination folder, named
``.csd-tmp-<pid>-<random>-<name>``, fsync it, give it the usual mode (``0o666 & ~umask``;
``mkstemp`` alone would leave 0600) and rename it onto the final name
(``os.replace``, atomic on POSIX within one file system). A reader, a full disk or a killed writer
therefore sees either the previous file or the new one, never a truncated file under the final
name; two processes writing the same name leave one complete file. The temp files of killed
writers (their PID no longer runs) are removed the first time this process writes into that
folder. ``tempfile``/``os.replace`` do the work; the module only adds the naming, the mode and
the clean-up.

**Run lock.** :func:`lock_run_dir` takes an exclusive ``fcntl.flock`` on ``<folder>/.csd-fast.lock``
and writes its PID there. The kernel drops the lock when the process dies, so a lock file left by
a dead run is simply taken over; a live run makes the next one fail at once with
:class:`RunDirLockedError` naming the folder and its PID. Locks are per process and re-entrant.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import tempfile
from pathlib import Path

__all__ = [
    "atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text", "check_writable_dir",
    "lock_run_dir", "unlock_run_dir", "RunDirLockedError", "LOCK_NAME", "TEMP_PREFIX", "is_internal_file",
]

TEMP_PREFIX = ".csd-tmp-"
LOCK_NAME = ".csd-fast.lock"
_TEMP_RE = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-")
_cleaned: set[str] = set()
_locks: dict[str, int] = {}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_orphans(folder) -> list[Path]:
    """Remove ``.csd-tmp-<pid>-*`` files in ``folder`` whose writer ``pid`` is no longer running;
    returns what was removed. Temp files of live writers (another run writing there) are kept."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            m = _TEMP_RE.match(entry.name)
            if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path):
    """``with atomic_path(path) as tmp: writer(tmp)`` for writers that need a file name: ``tmp`` is a
    temp file in ``path``'s folder; when the block ends without error it is fsynced, given the usual
    mode and renamed onto ``path`` (see the module docstring). On any error (including a full disk)
    the temp file is removed and the previous file at ``path``, if any, is untouched; an ``OSError``
    without a file name is re-raised naming ``path``. Parent folders are created."""
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    if key not in _cleaned:
        clean_orphans(folder)
        _cleaned.add(key)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=f"-{path.name}", dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:  # e.g. a full disk
            raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from err
        raise
    _fsync_dir(folder)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """``with atomic_write(path) as f: ...`` writes ``path`` atomically through :func:`atomic_path`.

    ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8, ``newline=""`` so csv writes its own line ends).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode: expected 'wb' or 'w', got {mode!r}")
    kwargs = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse fsync on a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def check_writable_dir(folder, what: str) -> Path:
    """Create ``folder`` if needed and prove a file can be created in it, before any work is done.

    Raises ``ValueError`` naming ``what`` (e.g. ``"--out"``) and the folder when it cannot be
    created or written (read-only, not a folder, permission denied).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix="-probe", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise ValueError(f"{what}: cannot write to {str(folder)!r} ({err.strerror or err})") from err
    return folder


class RunDirLockedError(ValueError):
    """Another live process holds the run lock of an output folder."""


def lock_run_dir(folder) -> Path:
    """Create ``folder`` and hold its run lock until this process exits (or :func:`unlock_run_dir`).

    Re-entrant within a process. Raises :class:`RunDirLockedError` when another live process holds
    it; a lock file of a dead process is taken over.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _locks:
        return folder
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise RunDirLockedError(
            f"{folder} is in use by another csd-fast run (PID {holder}); wait for it to finish, "
            "stop it, or choose another output folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _locks[key] = fd
    return folder


def unlock_run_dir(folder) -> None:
    """Release the run lock this process holds on ``folder`` (no-op when it holds none)."""
    fd = _locks.pop(os.path.realpath(folder), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def is_internal_file(name: str) -> bool:
    """Whether a file name is one of this module's own (the run lock, a temp file)."""
    return name == LOCK_NAME or name.startswith(TEMP_PREFIX)
