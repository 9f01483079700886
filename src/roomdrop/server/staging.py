"""Relay staging: the chunks the server relays for one transfer, encrypted on disk, bounded.

When two peers cannot reach each other the server carries the chunks itself. Each
verified chunk the sender uploads is *put* here and the receiver's forwarding task
*takes* it back out, oldest first. Between the two, the chunk lives on disk only, never
in memory, so a transfer's memory is one chunk in flight whatever the file size::

    <data_dir>/relay/                 root, one directory per relayed transfer
        <transfer_id>/                mode 0700, created by RelayStaging
            ring                      ``window`` slots of nonce (12) || AES-GCM
                                      ciphertext || tag (16), reused as chunks go out

One file per transfer, opened once, written and read at fixed slot offsets: creating,
reading and deleting a file per chunk cost ~270 us a chunk here, the slots ~10 us.

Encryption at rest: each :class:`RelayStaging` generates a 256-bit AES-GCM key in
memory, and the key is never written anywhere. Every chunk gets a fresh random 96-bit
nonce, stored in front of its ciphertext, and the associated data binds the transfer
id and the chunk index, so a file copied into another transfer's directory or renamed
to another index fails authentication instead of decrypting into the wrong place. A
tampered or truncated slot makes :meth:`~RelayStaging.take` raise :class:`StorageError`
(the chunk is dropped and its slot freed; the sender may send it again).

Backpressure: at most ``window`` chunks are staged and not yet taken. A ``put`` beyond
that waits until a ``take`` frees a slot, so a slow receiver slows the sender instead of
growing anything: disk use is bounded by ``window`` chunks and memory by the one chunk
being encrypted or decrypted (the bookkeeping is ``window`` integers).

Where the work runs: one chunk's file work (a 64 KiB write or read into the page cache
and one AES-GCM pass) runs inline on the event loop, because ``asyncio.to_thread`` costs
about four times as much here (see :mod:`roomdrop.manager`). Nothing is fsynced: staging
never has to survive the process, since its key does not.

Emptied: when the last staged chunk is taken, the ring is truncated to nothing, so no
ciphertext stays on disk once everything went out. With ``trim_after`` > 0 that waits
until the ring has stayed empty that long (a put in between cancels it): a receiver that
keeps up only just would otherwise have the ring truncated and its pages allocated again
for nearly every chunk, which cost ~40 us a chunk here.

Cleanup: :meth:`~RelayStaging.close` removes every staged file and the directory before
it returns and wakes every waiting ``put`` and ``take`` with :class:`RelayClosed`.
Leftovers of a previous process cannot be decrypted (their keys died with it), so the
server calls :meth:`~RelayStaging.purge` at start; :meth:`~RelayStaging.purge_older_than`
is the one-hour backstop for staging nobody closed. A directory's mtime is its last
activity: every put and take touches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import stat
import time
from collections import deque
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from roomdrop.exceptions import RelayClosed, StorageError
from roomdrop.storage import describe_os_error

__all__ = [
    "DIR_MODE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "FrameSeal",
    "RelayClosed",
    "RelayStaging",
]

DIR_MODE: Final = 0o700
_TOUCH_EVERY: Final = 5.0
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
KEY_BITS: Final = 256
_AAD_LABEL: Final = b"roomdrop-relay-v1\0"
_TRANSFER_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
"""A transfer id is a single safe path component (a UUID is one)."""


class RelayStaging:
    """Encrypted, bounded, on-disk staging of the chunks relayed for one transfer."""

    def __init__(
        self,
        root: Path,
        transfer_id: str,
        *,
        window: int = 32,
        chunk_size: int = 64 * 1024,
        trim_after: float = 0.0,
    ) -> None:
        if not _TRANSFER_ID.fullmatch(transfer_id):
            raise ValueError(f"not a usable transfer id: {transfer_id!r}")
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.transfer_id = transfer_id
        self.window = window
        self.chunk_size = chunk_size
        self.directory = root / transfer_id
        self.ring = self.directory / "ring"
        self._slot_size = NONCE_SIZE + chunk_size + TAG_SIZE
        self._key = AESGCM.generate_key(bit_length=KEY_BITS)  # memory only; tests read it
        self._aead = AESGCM(self._key)
        # (index, slot, sealed length, note), oldest first
        self._order: deque[tuple[int, int, int, str]] = deque()
        self._indices: set[int] = set()
        self._free = list(range(window - 1, -1, -1))
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self._touched = 0.0
        self._fd = -1
        self.trim_after = trim_after
        self._trim: asyncio.TimerHandle | None = None
        try:
            root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                # A leftover of this transfer id: undecryptable with our fresh key.
                _remove(self.directory)
            self.directory.mkdir(mode=DIR_MODE)
            self.directory.chmod(DIR_MODE)  # exactly 0700 whatever the umask
            self._fd = os.open(self.ring, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise StorageError(
                transfer_id, describe_os_error(exc, f"creating relay staging {self.directory}")
            ) from exc

    def slot_offset(self, index: int) -> int:
        """Where staged chunk ``index`` lies in :attr:`ring` (for tests and tools)."""
        slot = next(slot for i, slot, _n, _note in self._order if i == index)
        return slot * self._slot_size

    # --- the two ends -------------------------------------------------------------

    async def put(self, index: int, data: bytes, note: str = "") -> bool:
        """Stage chunk ``index``, waiting while ``window`` chunks are staged and not taken.

        Returns False, without waiting, if that index is already staged and not yet taken.
        ``note`` (e.g. the chunk's checksum) comes back out with it from :meth:`take_item`.
        """
        if index < 0:
            raise ValueError(f"chunk index must not be negative: {index}")
        self._check_open()
        if index in self._indices:
            return False
        while len(self._order) >= self.window:
            await self._changed()
            self._check_open()
            if index in self._indices:  # staged by another put while this one waited
                return False
        slot = self._free.pop()
        try:
            length = self._write(index, slot, data)
        except BaseException:
            self._free.append(slot)
            raise
        self._order.append((index, slot, length, note))
        self._indices.add(index)
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        self._notify()
        return True

    async def take(self) -> tuple[int, bytes]:
        """Wait for a staged chunk; return the oldest one's ``(index, plaintext)``."""
        index, data, _note = await self.take_item()
        return index, data

    async def take_item(self) -> tuple[int, bytes, str]:
        """Wait for a staged chunk; return the oldest one's ``(index, plaintext)``.

        Its slot is freed whether or not it decrypts; a tampered or truncated one raises
        :class:`StorageError`.
        """
        while not self._order and not self._closed:
            await self._changed()
        self._check_open()
        index, slot, length, note = self._order.popleft()
        self._indices.discard(index)
        try:
            return index, self._read(index, slot, length), note
        finally:
            self._free.append(slot)
            if not self._order:  # nothing staged: nothing left on disk either
                if self.trim_after <= 0:
                    self._truncate()
                elif self._trim is None:
                    loop = asyncio.get_running_loop()
                    self._trim = loop.call_later(self.trim_after, self._truncate)
            self._notify()

    def staged(self) -> int:
        """How many chunks are staged and not yet taken."""
        return len(self._order)

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Delete every staged file and the directory, and wake every waiter. Idempotent."""
        self._closed = True
        self._order.clear()
        self._indices.clear()
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        try:
            _remove(self.directory)
        except FileNotFoundError:
            pass  # already purged
        except OSError as exc:
            raise StorageError(
                self.transfer_id,
                describe_os_error(exc, f"removing relay staging {self.directory}"),
            ) from exc
        finally:
            self._notify()

    # --- cleanup of whole staging directories -----------------------------------------

    @staticmethod
    def purge(root: Path) -> int:
        """Remove every staging directory under ``root``; how many were removed.

        For server start: a previous process's staging cannot be decrypted any more.
        """
        return _purge(root, older_than=None)

    @staticmethod
    def purge_older_than(root: Path, older_than: float) -> int:
        """Remove the staging directories under ``root`` untouched since ``older_than``
        (epoch seconds); how many were removed."""
        return _purge(root, older_than=older_than)

    # --- inside -----------------------------------------------------------------------

    def _truncate(self) -> None:
        self._trim = None
        if not self._order and self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)

    def _changed(self) -> asyncio.Future[None]:
        """A future that is done at the next put, take or close (await it, then look
        again: the single event loop makes that check and the change that follows it
        atomic, so no lock is needed)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def _notify(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _check_open(self) -> None:
        if self._closed:
            raise RelayClosed(self.transfer_id)

    def _aad(self, index: int) -> bytes:
        return b"%s%s\0%d" % (_AAD_LABEL, self.transfer_id.encode("ascii"), index)

    def _touch(self) -> None:
        """Mark activity for :meth:`purge_older_than` (at most once every few seconds)."""
        now = time.monotonic()
        if now - self._touched >= _TOUCH_EVERY:
            self._touched = now
            with contextlib.suppress(OSError):
                os.utime(self.directory)

    def _write(self, index: int, slot: int, data: bytes) -> int:
        if len(data) > self.chunk_size:
            raise ValueError(f"chunk of {len(data)} bytes exceeds the {self.chunk_size}-byte slot")
        nonce = secrets.token_bytes(NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, data, self._aad(index))
        try:
            written = os.pwritev(self._fd, [nonce, sealed], slot * self._slot_size)
            if written != NONCE_SIZE + len(sealed):
                raise OSError(errno.EIO, "short write")
        except OSError as exc:
            raise StorageError(
                self.transfer_id,
                describe_os_error(exc, f"staging chunk {index} of transfer {self.transfer_id}"),
            ) from exc
        self._touch()
        return NONCE_SIZE + len(sealed)

    def _read(self, index: int, slot: int, length: int) -> bytes:
        try:
            blob = os.pread(self._fd, length, slot * self._slot_size)
        except OSError as exc:
            raise StorageError(
                self.transfer_id,
                describe_os_error(exc, f"reading staged chunk {index} of {self.transfer_id}"),
            ) from exc
        self._touch()
        if len(blob) < length:
            raise StorageError(
                self.transfer_id,
                f"staged chunk {index} of transfer {self.transfer_id} is truncated "
                f"({len(blob)} of {length} bytes)",
            )
        view = memoryview(blob)
        try:
            return self._aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], self._aad(index))
        except InvalidTag:
            raise StorageError(
                self.transfer_id,
                f"staged chunk {index} of transfer {self.transfer_id} failed authentication "
                "(tampered with or truncated)",
            ) from None


def _purge(root: Path, older_than: float | None) -> int:
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StorageError(
            "relay", describe_os_error(exc, f"listing relay staging {root}")
        ) from exc
    removed = 0
    for entry in entries:
        try:
            st = entry.lstat()
            if not stat.S_ISDIR(st.st_mode):
                continue
            if older_than is not None and st.st_mtime >= older_than:
                continue
            _remove(entry)
        except FileNotFoundError:
            continue  # removed meanwhile (closed by its transfer)
        except OSError as exc:
            raise StorageError(
                entry.name, describe_os_error(exc, f"removing relay staging {entry}")
            ) from exc
        removed += 1
    return removed


def _remove(path: Path) -> None:
    """Delete ``path``: a directory with everything in it, or anything else; it never
    follows a symlink. Staging directories are flat; this copes with anything else
    without ``shutil`` (which only :mod:`roomdrop.storage` may import)."""
    if stat.S_ISDIR(path.lstat().st_mode):
        for entry in path.iterdir():
            with contextlib.suppress(FileNotFoundError):
                _remove(entry)
        path.rmdir()
    else:
        path.unlink()


class FrameSeal:
    """AES-GCM for frames relayed between instances (through Redis).

    Every instance of a deployment shares the server secret, so each derives the same
    key for a transfer (HKDF-SHA256 over the secret, with the transfer id in its info)
    and no key is ever stored or sent. A sealed frame is a fresh 96-bit nonce followed
    by the ciphertext and tag; the associated data binds the transfer id, so a frame
    moved to another transfer's queue fails to open.
    """

    _INFO = b"roomdrop relay between instances v1\0"

    def __init__(self, secret: str, transfer_id: str) -> None:
        key = HKDF(hashes.SHA256(), 32, salt=None, info=self._INFO + transfer_id.encode())
        self._aead = AESGCM(key.derive(secret.encode()))
        self._aad = _AAD_LABEL + transfer_id.encode()

    def seal(self, frame: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, frame, self._aad)

    def open(self, sealed: bytes) -> bytes | None:
        """The frame, or None if ``sealed`` is not one of this transfer's, intact."""
        try:
            return self._aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], self._aad)
        except InvalidTag:
            return None
