"""The rules both store adapters enforce alike, so that code written and tested against
the directory store behaves the same on S3 (and the other way round).

- A key is a transfer id: ``^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$``. Anything else is a
  bug of the caller, not a refusal of the store: :class:`ValueError`, before any I/O.
  That also keeps a key from naming a path outside the directory store, or an object
  outside the S3 store's prefix.
- Part numbers are 1 to 10 000, as on S3 (:class:`ValueError` otherwise).
- An upload is finished from at least one part, in ascending order of number, each but
  the last at least :data:`~roomdrop.server.store.MIN_PART` bytes: S3 answers
  ``EntityTooSmall`` otherwise, so the directory store refuses it too
  (:class:`~roomdrop.exceptions.StoreRefused`), and the S3 store checks it before
  asking, so that the refusal is the same on stores that do not enforce it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from roomdrop.exceptions import StoreRefused

if TYPE_CHECKING:
    from roomdrop.server.store import Part

__all__ = ["KEY_PATTERN", "MAX_PART_NUMBER", "check_finish", "check_key", "check_part_number"]

KEY_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_PART_NUMBER: Final = 10_000


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ValueError(f"not a store key (a transfer id): {key!r}")
    return key


def check_part_number(number: int) -> int:
    if isinstance(number, bool) or not isinstance(number, int):
        raise ValueError(f"a part number is an int, not {number!r}")
    if not 1 <= number <= MAX_PART_NUMBER:
        raise ValueError(f"part number {number} is not in 1..{MAX_PART_NUMBER}")
    return number


def check_finish(store: str, key: str, parts: Sequence[Part], min_part: int) -> None:
    """Refuse, as S3 would, to make ``key`` of these parts."""
    where = f"{store}: finishing {key}"
    if not parts:
        raise StoreRefused(f"{where}: an object is made of one part or more, none given")
    for before, after in itertools.pairwise(parts):
        if after.number <= before.number:
            raise StoreRefused(
                f"{where}: parts must be in ascending order (InvalidPartOrder): "
                f"{after.number} after {before.number}"
            )
    for part in parts[:-1]:
        if part.size < min_part:
            raise StoreRefused(
                f"{where}: part {part.number} is {part.size} bytes, every part but the "
                f"last must be at least {min_part} (EntityTooSmall)"
            )
