"""The client's config directory and its private files: where it is, reading a file
only its owner may read, creating one atomically, replacing one atomically, and a lock
for a read-modify-write. The one client module that works with these files directly
(:mod:`.keys` and :mod:`.peerkeys` say what they hold).

The directory is ``ROOMDROP_CONFIG_DIR`` if set, else ``$XDG_CONFIG_HOME/roomdrop``
(an absolute ``XDG_CONFIG_HOME`` only, as the XDG spec says), else
``~/.config/roomdrop``; it is made with mode 0700 and its files with mode 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ConfigError", "config_dir", "create_private", "locked", "read_private", "replace"]


class ConfigError(Exception):
    """A file of the config directory cannot be used (damaged, readable by others, not
    ours); the message says which and what to do."""


def config_dir(override: Path | None = None) -> Path:
    """``override`` (``ROOMDROP_CONFIG_DIR``), else the XDG config directory's ``roomdrop``."""
    if override is not None:
        return override.expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "roomdrop"


def _make_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the config directory {directory}: {exc.strerror}") from None


def read_private(path: Path) -> bytes | None:
    """The content of ``path``, None if there is no such file. ConfigError if it is not a
    regular file of this user that only this user may read and write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file")
        if st.st_uid != os.getuid():
            raise ConfigError(f"{path} belongs to another user (uid {st.st_uid}): it is not used")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path} may be read or changed by other users (mode {mode:04o}); it holds a "
                f"private key, so it is not used: run `chmod 600 {path}` if no one else "
                "could have read it, else move it away (a new key is made)"
            )
        return f.read()


def _write_new(directory: Path, name: str, data: bytes) -> Path:
    """``data`` in a new temporary file of mode 0600 beside ``name``, flushed to disk."""
    tmp = directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private(path: Path, data: bytes) -> bool:
    """Create ``path`` (mode 0600, in a directory of mode 0700 made if need be) holding
    ``data``, all at once: it appears whole or not at all, and never replaces a file
    there already. False if one was there (another process made it meanwhile)."""
    _make_dir(path.parent)
    try:
        tmp = _write_new(path.parent, path.name, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        _sync_dir(path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    return True


def replace(path: Path, data: bytes) -> None:
    """Put ``data`` in ``path`` (mode 0600) at once: a reader sees the old content or the
    new, never a part."""
    _make_dir(path.parent)
    try:
        tmp = _write_new(path.parent, path.name, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _sync_dir(path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` (``.NAME.lock``), so that two commands
    updating the same file do not lose each other's change."""
    _make_dir(path.parent)
    lock = path.parent / f".{path.name}.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot lock {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
