"""``roomdrop kept``: the files the server keeps with this user as a party
(docs/protocol.md §16): those this user keeps for others (``send --store``), which it
may withdraw, and those kept for this user, which ``receive`` takes when it next joins
their room. Both over REST (:mod:`.http`); no room is joined.

Withdrawing is cancelling the transfer (``DELETE``, either party may: the receiver
discards what was kept for it): the server deletes the object from its store at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from roomdrop.client.http import ServerApi
from roomdrop.exceptions import RoomdropError
from roomdrop.protocol.state import Status
from roomdrop.protocol.transfer import TransferObject

__all__ = ["DISCARDED", "WITHDRAWN", "Kept", "NotKept", "list_kept", "withdraw"]

WITHDRAWN = "withdrawn by its sender"
DISCARDED = "discarded by its receiver"


class NotKept(RoomdropError):
    """No file kept with this user as a party has that id."""

    code = "not-found"


@dataclass(frozen=True, slots=True)
class Kept:
    """One kept file, as this user sees it."""

    transfer: TransferObject
    mine: bool
    """This user keeps it for someone else (its sender); else it is kept for this user."""

    @property
    def other(self) -> str:
        """The other party: the receiver of a file this user keeps, else the sender."""
        t = self.transfer
        return t.receiver_id if self.mine else t.sender_id


async def list_kept(
    servers: Sequence[str], token: str, user: str, *, room: str | None = None
) -> list[Kept]:
    """The caller's kept files (``GET /webrtc/file-transfers?status=stored``; of
    ``room`` only, if given), oldest first: those it keeps for others, then those kept
    for it."""
    api = ServerApi(servers, token)
    try:
        return await _listed(api, user, room)
    finally:
        await api.close()


async def _listed(api: ServerApi, user: str, room: str | None) -> list[Kept]:
    raw = await api.transfers(Status.STORED.value)
    kept: list[Kept] = []
    for entry in raw:
        try:
            t = TransferObject.model_validate(entry)
        except ValidationError:
            continue  # a record this client does not understand: not listed
        if room is not None and t.room_id != room:
            continue
        kept.append(Kept(t, mine=t.sender_id == user))
    kept.sort(key=lambda k: (not k.mine, k.transfer.stored_at or "", k.transfer.filename))
    return kept


async def withdraw(
    servers: Sequence[str], token: str, user: str, transfer_id: str, *, room: str | None = None
) -> Kept:
    """Withdraw (as its sender) or discard (as its receiver) the kept file
    ``transfer_id`` (a prefix of its id is enough when it names one file): the server
    deletes it from its store. :class:`NotKept` if no kept file has that id; the
    server's own refusal (with its code) if it cannot be withdrawn any more (delivered
    or expired meanwhile)."""
    api = ServerApi(servers, token)  # one client for the listing and the cancel
    try:
        return await _withdraw(api, user, transfer_id, room)
    finally:
        await api.close()


async def _withdraw(api: ServerApi, user: str, transfer_id: str, room: str | None) -> Kept:
    wanted = transfer_id.strip().lower()
    listed = await _listed(api, user, room)
    matches = [k for k in listed if k.transfer.transfer_id.startswith(wanted)]
    if not wanted or not matches:
        raise NotKept(
            f"no file kept on the server with id {transfer_id!r} for you or by you: "
            "`roomdrop kept` lists them"
        )
    if len(matches) > 1:
        ids = ", ".join(k.transfer.transfer_id for k in matches)
        raise NotKept(
            f"{transfer_id!r} names {len(matches)} kept files ({ids}): give more of the id"
        )
    (kept,) = matches
    t = kept.transfer
    record = await api.cancel(t.room_id, t.transfer_id, WITHDRAWN if kept.mine else DISCARDED)
    return Kept(TransferObject.model_validate(record), mine=kept.mine)
