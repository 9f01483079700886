"""FastAPI routes under ``/webrtc``: the WebSocket and the seed's REST endpoints.

Each route authenticates, then calls the same :class:`~roomdrop.server.hub.Hub` method
its WebSocket twin calls, so both have the same effect and send the same messages.

Each route declares every refusal it can answer (``responses=``, each with
:class:`ErrorBody`), so the OpenAPI document lists them all; ``app.py`` makes every
refusal that body. The request bodies are strict about JSON types, as the WebSocket's
messages are (an integer is a JSON integer, not ``"10"``, ``10.0`` or ``true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Annotated, Any, Self
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, Path, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from roomdrop.e2e import decode_key
from roomdrop.exceptions import E2EError, ProtocolError, RoomdropError, Unauthorized
from roomdrop.protocol.chunks import count_chunks
from roomdrop.protocol.messages import E2E, Offer, Range
from roomdrop.protocol.state import Status
from roomdrop.protocol.transfer import TransferObject
from roomdrop.server.hub import Hub
from roomdrop.server.turn import turn_server

__all__ = ["build_router"]

log = logging.getLogger("roomdrop.server")

TRANSFER = "/rooms/{room_id}/file-transfer/{transfer_id}"
ROOM_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_ROOM = 4400
CLOSE_TRY_AGAIN = 1013
CLOSE_TIMEOUT = 5.0
"""How long a close frame may wait for a socket that does not read before the
connection is dropped (the peer sees 1006: nothing reached it)."""
ABORT = "roomdrop.abort"
"""The ASGI scope extension (run.py's WebSocket protocol) whose ``abort`` drops the
connection at once, unsent data and all."""


class ErrorBody(BaseModel):
    """A refused request: nothing changed (protocol.md §11.9)."""

    detail: str = Field(description="what was wrong, for a person")
    code: str = Field(description="machine-readable (protocol.md §8)")
    errors: list[dict[str, Any]] | None = Field(
        None, description="a request that failed validation: every error, as FastAPI lists them"
    )


WHY: dict[int, str] = {
    401: "`unauthorized`: no token, or a forged or expired one",
    403: "`forbidden`: not in the room, or not the party who may do this",
    404: "`unknown-transfer`: no such transfer in this room for this user",
    409: "`invalid-transition`: the transfer's status does not allow it",
    413: "`file-too-large`: over the largest file size the server takes",
    422: "`protocol-error` (a malformed or invalid request), `mime-type-not-allowed`, `policy`; "
    "an offer: `e2e-required` (no `e2e` part where the server requires end-to-end "
    "encryption), `e2e-failed` (its content key sealed to another device key than a "
    "party published: `stale receiver key`)",
    429: "`too-many-transfers`: a limit on live transfers is reached",
    503: "`backend-unavailable`: the state instances share (Redis) is out of reach",
}


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that may refuse with ``statuses``."""
    return {status: {"model": ErrorBody, "description": WHY[status]} for status in statuses}


class OfferRequest(BaseModel):
    """What a sender declares about the file it offers."""

    model_config = ConfigDict(extra="forbid")

    receiver_id: StrictStr = Field(min_length=1, max_length=256)
    filename: StrictStr = Field(min_length=1, max_length=1024)
    file_size: StrictInt = Field(ge=0)
    mime_type: StrictStr = Field("application/octet-stream", max_length=255)
    sha256: StrictStr = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the whole file")
    chunk_size: StrictInt | None = Field(None, ge=1, le=1024 * 1024, description="default: 64 KiB")
    transfer_id: UUID | None = Field(None, description="default: a new UUID")
    e2e: E2E | None = Field(
        None,
        description="the content key sealed to both parties' device keys (protocol.md "
        "§14.2); required unless the server carries transfers in the clear. It is bound "
        "to the offer's transfer_id and chunk_size, so those must be given with it",
    )
    store: StrictBool = Field(
        False,
        description="keep the file in the server's store for the receiver, who need not "
        "be in the room (the sender's consent; end-to-end encrypted offers only, §16)",
    )

    @model_validator(mode="after")
    def _e2e_needs_its_binding(self) -> Self:
        if self.e2e is not None and (self.transfer_id is None or self.chunk_size is None):
            raise ValueError(
                "an offer with e2e must give transfer_id and chunk_size: the sealed "
                "content key is bound to them"
            )
        return self


class AcceptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    missing: list[Range] | None = Field(
        None, description="chunks the receiver still needs, as [start, end) ranges"
    )
    scan: StrictBool | None = Field(
        None,
        description="the receiver scans the file for malware before saving it (required "
        "where ROOMDROP_REQUIRE_SCAN is set; the server cannot check it)",
    )


class ReasonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: StrictStr | None = Field(None, max_length=1024)


class IceConfig(BaseModel):
    ice_servers: list[dict[str, Any]]


class StarletteSocket:
    """The hub's :class:`~roomdrop.server.hub.Socket` over a Starlette WebSocket."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def send_text(self, data: str) -> None:
        await self.websocket.send_text(data)

    async def send_bytes(self, data: bytes) -> None:
        await self.websocket.send_bytes(data)

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame; if the peer does not read enough for it to go out within
        CLOSE_TIMEOUT, drop the connection."""
        try:
            await asyncio.wait_for(self.websocket.close(code, reason), CLOSE_TIMEOUT)
        except TimeoutError:
            self.abort()
        except Exception:  # the socket is gone already
            pass

    def abort(self) -> None:
        extension = (self.websocket.scope.get("extensions") or {}).get(ABORT) or {}
        abort = extension.get("abort")
        if callable(abort):
            abort()


def close_reason(text: str) -> str:
    """``text`` cut to fit a close frame's reason (123 bytes of UTF-8)."""
    return text.encode()[:123].decode(errors="ignore")


def device_key(text: str | None) -> str | None:
    """The device key a client published in the WebSocket's query (``key=``): None if
    it gave none (or an empty one), else exactly 32 bytes in unpadded base64url
    (:class:`E2EError` saying what is wrong)."""
    if not text:
        return None
    try:
        decode_key(text)
    except E2EError:
        raise E2EError(
            f"invalid device key {text[:16]!r}: a device key is 32 bytes in unpadded "
            "base64url (43 characters)"
        ) from None
    return text


bearer = HTTPBearer(auto_error=False, description="JWT from `roomdrop token USER`")


def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    hub: Hub = request.app.state.hub
    return hub.authority.verify(credentials.credentials if credentials else None)


User = Annotated[str, Depends(current_user)]
RoomId = Annotated[str, Path(pattern=ROOM_ID)]
TransferId = Annotated[UUID, Path()]


def build_router(hub: Hub) -> APIRouter:
    router = APIRouter()

    @router.websocket("/ws/{room_id}")
    async def room_socket(
        websocket: WebSocket, room_id: str, token: str | None = None, key: str | None = None
    ) -> None:
        """Join a room: control messages as JSON text, relay chunks as binary frames.
        ``key`` is the device's public key (43 characters of unpadded base64url), which
        the others get in ``room-state`` and ``user-joined``."""
        await websocket.accept()
        try:
            user = hub.authority.verify(token)
        except Unauthorized as exc:
            await websocket.close(CLOSE_UNAUTHORIZED, exc.message)
            return
        if not re.match(ROOM_ID, room_id):
            await websocket.close(CLOSE_BAD_ROOM, f"invalid room id {room_id[:64]!r}")
            return
        try:
            key = device_key(key)
        except E2EError as exc:
            await websocket.close(CLOSE_BAD_ROOM, close_reason(exc.message))
            return
        try:
            participant = await hub.join(room_id, user, StarletteSocket(websocket), key)
        except RoomdropError as exc:  # the shared state is out of reach: try again later
            await websocket.close(CLOSE_TRY_AGAIN, exc.message[:120])
            return
        writer = asyncio.create_task(participant.outbox.run(), name=f"ws-writer-{user}")
        try:
            while not participant.outbox.closed:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") is not None:
                    await hub.handle_text(participant, message["text"])
                elif message.get("bytes") is not None:
                    await hub.relay.handle_bytes(participant, message["bytes"])
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            try:
                await hub.leave(participant)
            except RoomdropError as exc:  # the shared state is out of reach
                log.warning("leave of %s in %s not recorded: %s", user, room_id, exc)

    @router.get("/config", response_model=IceConfig, responses=refusals(401))
    async def config(user: User) -> IceConfig:
        """The ICE servers clients should use for peer connections: the configured ones,
        and TURN with credentials for this user that expire (ROOMDROP_TURN_*)."""
        settings = hub.settings
        servers = list(settings.ice_servers)
        if settings.turn_urls and settings.turn_secret is not None:
            servers.append(
                turn_server(
                    settings.turn_urls,
                    settings.turn_secret.get_secret_value(),
                    user,
                    now=time.time(),
                    ttl=settings.turn_ttl,
                )
            )
        return IceConfig(ice_servers=servers)

    @router.post(
        "/rooms/{room_id}/file-transfer/offer",
        response_model=TransferObject,
        responses=refusals(401, 403, 413, 422, 429, 503),
    )
    async def create_file_transfer_offer(
        room_id: RoomId, body: OfferRequest, user: User
    ) -> dict[str, Any]:
        """Create a new file transfer offer to another participant of the room: end to
        end encrypted (``e2e``, with ``transfer_id`` and ``chunk_size``, which its sealed
        key is bound to) unless the server carries transfers in the clear."""
        chunk_size = body.chunk_size or hub.settings.chunk_size
        try:
            offer = Offer(
                transfer_id=body.transfer_id or uuid4(),
                receiver_id=body.receiver_id,
                filename=body.filename,
                file_size=body.file_size,
                mime_type=body.mime_type,
                chunk_size=chunk_size,
                total_chunks=count_chunks(body.file_size, chunk_size),
                sha256=body.sha256,
                e2e=body.e2e,
                store=body.store,
            )
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        return await hub.transfers.offer(room_id, user, offer)

    @router.post(
        TRANSFER + "/accept",
        response_model=TransferObject,
        responses=refusals(401, 403, 404, 409, 422, 503),
    )
    async def accept_file_transfer(
        room_id: RoomId, transfer_id: TransferId, user: User, body: AcceptRequest | None = None
    ) -> dict[str, Any]:
        """Accept a transfer (receiver only)."""
        missing, scan = (body.missing, body.scan) if body else (None, None)
        return await hub.transfers.accept(room_id, user, str(transfer_id), missing, scan=scan)

    @router.post(
        TRANSFER + "/reject",
        response_model=TransferObject,
        responses=refusals(401, 403, 404, 409, 422, 503),
    )
    async def reject_file_transfer(
        room_id: RoomId, transfer_id: TransferId, user: User, body: ReasonRequest | None = None
    ) -> dict[str, Any]:
        """Reject a transfer (receiver only)."""
        reason = body.reason if body else None
        return await hub.transfers.act(room_id, user, str(transfer_id), "reject", reason)

    @router.post(
        TRANSFER + "/pause",
        response_model=TransferObject,
        responses=refusals(401, 404, 409, 422, 503),
    )
    async def pause_file_transfer(
        room_id: RoomId, transfer_id: TransferId, user: User
    ) -> dict[str, Any]:
        """Pause an active transfer (either party)."""
        return await hub.transfers.act(room_id, user, str(transfer_id), "pause")

    @router.post(
        TRANSFER + "/resume",
        response_model=TransferObject,
        responses=refusals(401, 404, 409, 422, 503),
    )
    async def resume_file_transfer(
        room_id: RoomId, transfer_id: TransferId, user: User
    ) -> dict[str, Any]:
        """Resume a paused transfer (either party)."""
        return await hub.transfers.act(room_id, user, str(transfer_id), "resume")

    @router.get(
        TRANSFER + "/progress",
        response_model=TransferObject,
        responses=refusals(401, 404, 422, 503),
    )
    async def get_transfer_progress(
        room_id: RoomId, transfer_id: TransferId, user: User
    ) -> dict[str, Any]:
        """The transfer object (either party)."""
        return await hub.transfers.progress_of(room_id, user, str(transfer_id))

    @router.delete(
        TRANSFER, response_model=TransferObject, responses=refusals(401, 404, 409, 422, 503)
    )
    async def cancel_file_transfer(
        room_id: RoomId,
        transfer_id: TransferId,
        user: User,
        reason: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> dict[str, Any]:
        """Cancel a transfer and clean up (either party)."""
        return await hub.transfers.act(room_id, user, str(transfer_id), "cancel", reason)

    @router.get(
        "/file-transfers", response_model=list[TransferObject], responses=refusals(401, 422, 503)
    )
    async def list_file_transfers(
        user: User, status: Annotated[Status | None, Query()] = None
    ) -> list[dict[str, Any]]:
        """The caller's transfers, optionally of one status."""
        return await hub.transfers.user_transfers(user, status)

    return router
