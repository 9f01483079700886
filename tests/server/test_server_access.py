"""Who may do what, against a real ``roomdrop serve``: health and metrics, the API docs,
tokens over REST and WebSocket, participants-only and parties-only rules, and lookups of
transfers that are not there."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from websockets.exceptions import ConnectionClosed

from roomdrop.protocol.frames import Chunk, encode_frames
from roomdrop.server.auth import TokenAuthority

if TYPE_CHECKING:
    from conftest import Server

ICE = [{"urls": ["stun:stun.example.org:3478"]}, {"urls": "turn:turn.example.org", "x": 1}]
PREFIX = "/webrtc/rooms/{room_id}/file-transfer"
TRANSFER = PREFIX + "/{transfer_id}"
SHA = "ab" * 32
FORGER_SECRET = "not the server's secret, but long enough for HS256"


def fresh(*roles: str) -> list[str]:
    tag = uuid.uuid4().hex[:10]
    return [f"{role}-{tag}" for role in roles]


def transfer_path(room: str, tid: str, action: str | None = None) -> str:
    path = f"/webrtc/rooms/{room}/file-transfer/{tid}"
    return f"{path}/{action}" if action else path


def offer_body(receiver: str, size: int = 1000, **extra: Any) -> dict[str, Any]:
    return {"receiver_id": receiver, "filename": "a.bin", "file_size": size, "sha256": SHA, **extra}


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"ROOMDROP_ICE_SERVERS": json.dumps(ICE)}


@pytest.fixture(scope="module")
def e2e_env() -> dict[str, str]:
    # who may do what to a transfer is what this module is about, the same whether its
    # chunks are sealed or not: its offers are in the clear (sealed ones are refused or
    # let through by the rules of test_e2e_offers.py)
    return {"ROOMDROP_REQUIRE_E2E": "false"}


async def rest_offer(server: Server, room: str, sender: str, receiver: str) -> str:
    response = await server.request(
        sender, "POST", f"/webrtc/rooms/{room}/file-transfer/offer", json=offer_body(receiver)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["transfer_id"])


# --- operations ------------------------------------------------------------------------


async def test_healthz_answers_ok_with_its_version_and_counts(server: Server) -> None:
    response = await server.request(None, "GET", "/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["rooms"], int) and isinstance(body["connections"], int)


def metric(text: str, name: str) -> float:
    """The value of the sample ``name`` (with its labels, if any) in Prometheus text."""
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"no sample {name} in /metrics:\n{text}"
    return float(match.group(1))


async def test_metrics_count_connections_transfers_and_relayed_bytes(server: Server) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    before = (await server.request(None, "GET", "/metrics")).text
    relayed_before = metric(before, "roomdrop_relayed_bytes_total")

    a, b = await server.pair(room, alice, bob)
    data = b"metrics " * 125  # 1000 bytes, one chunk
    tid = await a.offer(bob, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    await b.recv("file-share-offer")
    pending = await server.request(None, "GET", "/metrics")
    assert pending.status_code == 200
    assert pending.headers["content-type"].startswith("text/plain")
    health = (await server.request(None, "GET", "/healthz")).json()
    assert metric(pending.text, "roomdrop_connections") == health["connections"] >= 2
    assert metric(pending.text, 'roomdrop_transfers{status="pending"}') >= 1

    await b.send("file-share-accept", {"transfer_id": tid})
    await a.recv("file-share-accept")
    chunk = Chunk(tid, 0, 1, 64 * 1024, data, hashlib.sha256(data).hexdigest())
    for frame in encode_frames(chunk):
        await a.send_raw(frame)
    await b.recv_frame()
    after = (await server.request(None, "GET", "/metrics")).text
    assert metric(after, "roomdrop_relayed_bytes_total") == relayed_before + len(data)
    assert metric(after, 'roomdrop_transfers{status="active"}') >= 1


EXPECTED_OPERATIONS = {
    ("/webrtc/config", "get"): None,
    ("/webrtc/file-transfers", "get"): None,
    (PREFIX + "/offer", "post"): ("receiver_id", "filename", "file_size", "sha256"),
    (TRANSFER + "/accept", "post"): ("missing",),
    (TRANSFER + "/reject", "post"): ("reason",),
    (TRANSFER + "/pause", "post"): None,
    (TRANSFER + "/resume", "post"): None,
    (TRANSFER + "/progress", "get"): None,
    (TRANSFER, "delete"): None,
}
TRANSFER_FIELDS = {
    "transfer_id",
    "room_id",
    "sender_id",
    "receiver_id",
    "filename",
    "file_size",
    "chunk_size",
    "total_chunks",
    "chunks_sent",
    "status",
    "progress_percent",
    "bytes_transferred",
    "started_at",
    "completed_at",
    "error",
}


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (and a single-branch ``anyOf``/``allOf``) to the schema object."""
    while True:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = spec["components"]["schemas"][name]
        elif "allOf" in schema and len(schema["allOf"]) == 1:
            schema = schema["allOf"][0]
        elif "anyOf" in schema:
            branches = [s for s in schema["anyOf"] if s.get("type") != "null"]
            assert len(branches) == 1, schema
            schema = branches[0]
        else:
            return schema


async def test_openapi_documents_every_webrtc_endpoint_with_its_schemas(server: Server) -> None:
    response = await server.request(None, "GET", "/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    found = {
        (path, method)
        for path, operations in spec["paths"].items()
        if path.startswith("/webrtc")
        for method in operations
    }
    # guest sign-in (the page's) is the one /webrtc operation without a token
    guest = {("/webrtc/guest", "get"), ("/webrtc/guest", "post")}
    assert found == set(EXPECTED_OPERATIONS) | guest
    for path, method in guest:
        assert not spec["paths"][path][method].get("security"), f"{method} {path}"
    assert any(s.get("scheme") == "bearer" for s in spec["components"]["securitySchemes"].values())
    for (path, method), body_fields in EXPECTED_OPERATIONS.items():
        operation = spec["paths"][path][method]
        where = f"{method.upper()} {path}"
        assert operation.get("security"), f"{where} does not say it needs a token"
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), where
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        ok = resolve(spec, ok)
        if path.endswith("/config"):
            assert "ice_servers" in ok["properties"], where
        elif path.endswith("/file-transfers"):
            assert ok["type"] == "array", where
            assert set(resolve(spec, ok["items"])["properties"]) >= TRANSFER_FIELDS, where
        else:
            assert set(ok["properties"]) >= TRANSFER_FIELDS, where
        if body_fields is None:
            assert "requestBody" not in operation, where
        else:
            body = resolve(spec, operation["requestBody"]["content"]["application/json"]["schema"])
            assert set(body_fields) <= set(body["properties"]), where
    offer = spec["paths"][PREFIX + "/offer"]["post"]["requestBody"]
    assert offer.get("required") is True


async def test_docs_page_serves_the_interactive_documentation(server: Server) -> None:
    response = await server.request(None, "GET", "/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.text and "/openapi.json" in response.text


# --- tokens ----------------------------------------------------------------------------


def bad_tokens(server: Server, user: str) -> dict[str, tuple[dict[str, str], str]]:
    """Authorization headers that must be refused, and the detail each should give."""
    forged = TokenAuthority(FORGER_SECRET).issue(user, 600)
    expired = server.authority.issue(user, -10)
    return {
        "none": ({}, "missing token"),
        "forged": ({"Authorization": f"Bearer {forged}"}, "token signature is invalid"),
        "expired": ({"Authorization": f"Bearer {expired}"}, "token expired"),
        "garbage": ({"Authorization": "Bearer not-a-jwt"}, "invalid token"),
    }


async def test_rest_without_a_valid_token_is_401_saying_what_is_wrong(server: Server) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, _ = await server.pair(room, alice, bob)
    tid = await rest_offer(server, room, alice, bob)
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/webrtc/config", None),
        ("GET", "/webrtc/file-transfers", None),
        ("POST", f"/webrtc/rooms/{room}/file-transfer/offer", offer_body(bob)),
        ("POST", transfer_path(room, tid, "accept"), {}),
        ("POST", transfer_path(room, tid, "reject"), {"reason": "no"}),
        ("POST", transfer_path(room, tid, "pause"), None),
        ("POST", transfer_path(room, tid, "resume"), None),
        ("GET", transfer_path(room, tid, "progress"), None),
        ("DELETE", transfer_path(room, tid), None),
    ]
    async with server.http() as http:
        for kind, (headers, detail) in bad_tokens(server, alice).items():
            for method, path, body in requests:
                response = await http.request(method, path, headers=headers, json=body)
                where = f"{kind} token: {method} {path}"
                assert response.status_code == 401, f"{where}: {response.text}"
                assert response.json()["code"] == "unauthorized", where
                assert response.json()["detail"].startswith(detail), f"{where}: {response.text}"
                assert response.headers["www-authenticate"] == "Bearer", where
    # nothing happened to the transfer
    assert (await server.transfer(room, alice, tid))["status"] == "pending"
    await a.silent(0.2, ignore=("file-share-offer",))


@pytest.mark.parametrize("kind", ["none", "forged", "expired", "garbage"])
async def test_websocket_with_a_bad_token_is_closed_with_4401_and_a_reason(
    server: Server, kind: str
) -> None:
    (room,) = fresh("room")
    token = {
        "none": None,
        "forged": TokenAuthority(FORGER_SECRET).issue("mallory", 600),
        "expired": server.authority.issue("mallory", -10),
        "garbage": "not-a-jwt",
    }[kind]
    reason = bad_tokens(server, "mallory")[kind][1]
    ws = await server.open_ws(room, token)
    try:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    finally:
        await ws.close()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    assert closed.value.rcvd.reason.startswith(reason)
    health = (await server.request(None, "GET", "/healthz")).json()
    assert room not in json.dumps(health)


async def test_websocket_to_an_invalid_room_id_is_closed_with_4400(server: Server) -> None:
    ws = await server.open_ws("-bad.room", server.token("alice"))
    try:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    finally:
        await ws.close()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4400
    assert "-bad.room" in closed.value.rcvd.reason


# --- participants only, parties only ---------------------------------------------------


async def test_a_stranger_to_the_room_may_not_offer_there(server: Server) -> None:
    room, elsewhere, alice, bob, mallory = fresh("room", "elsewhere", "alice", "bob", "mallory")
    _, b = await server.pair(room, alice, bob)
    await server.connect(elsewhere, mallory)  # a valid user, in another room
    path = f"/webrtc/rooms/{room}/file-transfer/offer"

    response = await server.request(mallory, "POST", path, json=offer_body(bob))
    assert response.status_code == 403, response.text
    assert response.json() == {"detail": f"you are not in room {room!r}", "code": "forbidden"}

    absent = await server.request(alice, "POST", path, json=offer_body("zed"))
    assert absent.status_code == 403, absent.text
    assert absent.json()["detail"] == f"receiver 'zed' is not in room {room!r}"
    await b.silent(0.3)
    listed = await server.request(bob, "GET", "/webrtc/file-transfers")
    assert listed.json() == []


async def test_to_anyone_but_its_parties_a_transfer_is_not_found_like_an_unknown_one(
    server: Server,
) -> None:
    """A third participant of the room, and a valid user who is not in it, learn nothing
    about a transfer: the same 404 (and the same ``unknown-transfer`` over the WebSocket)
    as for an id that does not exist, apart from the id."""
    room, elsewhere, alice, bob, carol, mallory = fresh(
        "room", "elsewhere", "alice", "bob", "carol", "mallory"
    )
    a, b = await server.pair(room, alice, bob)
    c = await server.connect(room, carol)
    m = await server.connect(elsewhere, mallory)
    tid = await rest_offer(server, room, alice, bob)
    unknown = str(uuid.uuid4())
    for method, action in [
        ("POST", "accept"),
        ("POST", "reject"),
        ("POST", "pause"),
        ("POST", "resume"),
        ("GET", "progress"),
        ("DELETE", None),
    ]:
        for user in (carol, mallory):
            answers = {}
            for which in (tid, unknown):
                response = await server.request(user, method, transfer_path(room, which, action))
                assert response.status_code == 404, f"{user} {action}: {response.text}"
                answers[which] = response.json()
            assert answers[tid] == {"detail": f"no transfer {tid!r}", "code": "unknown-transfer"}
            assert answers[unknown] == {
                "detail": f"no transfer {unknown!r}",
                "code": "unknown-transfer",
            }

    for client in (c, m):
        for kind in ("file-share-accept", "file-share-pause", "file-share-cancel"):
            for which in (tid, unknown):
                await client.send(kind, {"transfer_id": which})
                refusal = await client.recv_refusal()
                assert refusal["payload"] == {
                    "code": "unknown-transfer",
                    "message": f"no transfer {which!r}",
                    "transfer_id": which,
                }, refusal
    assert (await server.transfer(room, alice, tid))["status"] == "pending"
    await a.recv("file-share-offer")
    await b.recv("file-share-offer")
    await a.silent(0.3)
    await b.silent(0.1)


async def test_only_the_receiver_accepts_or_rejects_an_offer(server: Server) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await rest_offer(server, room, alice, bob)
    expected = f"only the receiver of transfer {tid} may do this"
    for action in ("accept", "reject"):
        response = await server.request(alice, "POST", transfer_path(room, tid, action))
        assert response.status_code == 403, f"{action}: {response.text}"
        assert response.json() == {"detail": expected, "code": "forbidden"}
        await a.send(f"file-share-{action}", {"transfer_id": tid})
        refusal = await a.recv_refusal()
        assert (refusal["payload"]["code"], refusal["payload"]["message"]) == (
            "forbidden",
            expected,
        )
    assert (await server.transfer(room, alice, tid))["status"] == "pending"

    accepted = await server.request(bob, "POST", transfer_path(room, tid, "accept"))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "active"
    assert (await b.recv("file-share-accept"))["sender_id"] == bob


async def test_a_transfer_under_another_rooms_path_is_not_found(server: Server) -> None:
    room, other, alice, bob = fresh("room", "other", "alice", "bob")
    await server.pair(room, alice, bob)
    await server.pair(other, alice, bob)  # both are members of the other room too
    tid = await rest_offer(server, room, alice, bob)
    for user, method, action in [
        (alice, "GET", "progress"),
        (bob, "POST", "accept"),
        (bob, "POST", "reject"),
        (alice, "POST", "pause"),
        (alice, "DELETE", None),
    ]:
        response = await server.request(user, method, transfer_path(other, tid, action))
        assert response.status_code == 404, f"{action}: {response.text}"
        assert response.json() == {"detail": f"no transfer {tid!r}", "code": "unknown-transfer"}
    assert (await server.transfer(room, alice, tid))["status"] == "pending"


async def test_an_unknown_transfer_is_not_found_and_a_malformed_id_is_422(
    server: Server,
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    await server.pair(room, alice, bob)
    unknown = str(uuid.uuid4())
    for user, method, action in [
        (alice, "GET", "progress"),
        (bob, "POST", "accept"),
        (alice, "POST", "resume"),
        (alice, "DELETE", None),
    ]:
        response = await server.request(user, method, transfer_path(room, unknown, action))
        assert response.status_code == 404, f"{action}: {response.text}"
        assert response.json() == {"detail": f"no transfer {unknown!r}", "code": "unknown-transfer"}
    malformed = await server.request(alice, "GET", transfer_path(room, "not-a-uuid", "progress"))
    assert malformed.status_code == 422, malformed.text
    bad_room = await server.request(alice, "GET", transfer_path("-bad", unknown, "progress"))
    assert bad_room.status_code == 422, bad_room.text


async def test_listing_by_status_gives_only_the_callers_transfers(server: Server) -> None:
    room, other, alice, bob, carol, dave, eve = fresh(
        "room", "other", "alice", "bob", "carol", "dave", "eve"
    )
    await server.pair(room, alice, bob)
    await server.pair(other, carol, dave)
    first = await rest_offer(server, room, alice, bob)
    second = await rest_offer(server, room, alice, bob)
    theirs = await rest_offer(server, other, carol, dave)
    accept = await server.request(bob, "POST", transfer_path(room, second, "accept"))
    assert accept.status_code == 200, accept.text

    async def listed(user: str, status: str | None) -> list[str]:
        params = {"status": status} if status else None
        response = await server.request(user, "GET", "/webrtc/file-transfers", params=params)
        assert response.status_code == 200, response.text
        return sorted(t["transfer_id"] for t in response.json())

    assert await listed(alice, "pending") == [first]
    assert await listed(bob, "pending") == [first]
    assert await listed(alice, "active") == [second]
    assert await listed(alice, None) == sorted([first, second])
    assert await listed(dave, "pending") == [theirs]
    assert await listed(eve, None) == []
    bad = await server.request(alice, "GET", "/webrtc/file-transfers", params={"status": "x"})
    assert bad.status_code == 422, bad.text


async def test_config_gives_the_configured_ice_servers(server: Server) -> None:
    response = await server.request("alice", "GET", "/webrtc/config")
    assert response.status_code == 200, response.text
    assert response.json() == {"ice_servers": ICE}


async def test_an_action_the_state_table_forbids_is_409_naming_the_status(
    server: Server,
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    await server.pair(room, alice, bob)
    tid = await rest_offer(server, room, alice, bob)
    pause = await server.request(alice, "POST", transfer_path(room, tid, "pause"))
    assert pause.status_code == 409, pause.text
    assert pause.json() == {
        "detail": f"transfer {tid} is pending: cannot pause",
        "code": "invalid-transition",
    }
    cancel = await server.request(alice, "DELETE", transfer_path(room, tid))
    assert cancel.status_code == 200, cancel.text
    again = await server.request(bob, "POST", transfer_path(room, tid, "accept"))
    assert again.status_code == 409, again.text
    assert again.json()["detail"] == f"transfer {tid} is cancelled: cannot accept"


async def test_only_the_sender_may_upload_chunks_of_a_transfer(server: Server) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await rest_offer(server, room, alice, bob)  # 1000 bytes, one chunk
    accept = await server.request(bob, "POST", transfer_path(room, tid, "accept"))
    assert accept.status_code == 200, accept.text
    data = b"x" * 1000
    (frame,) = encode_frames(Chunk(tid, 0, 1, 64 * 1024, data, hashlib.sha256(data).hexdigest()))
    await b.send_raw(frame)
    refusal = await b.recv_refusal()
    assert refusal["payload"]["code"] == "forbidden", refusal
    assert refusal["payload"]["message"] == f"only the sender of transfer {tid} may do this"
    await a.silent(0.3, ignore=("file-share-offer", "file-share-accept"))


async def test_an_over_long_cancel_reason_is_refused_with_422_not_500(server: Server) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    _, b = await server.pair(room, alice, bob)
    tid = await rest_offer(server, room, alice, bob)
    await b.recv("file-share-offer")
    response = await server.request(
        alice, "DELETE", transfer_path(room, tid), params={"reason": "x" * 2000}
    )
    assert response.status_code == 422, response.text
    assert (await server.transfer(room, alice, tid))["status"] == "pending"
    await b.silent(0.3)  # no cancel announced for a transfer that was not cancelled


async def test_the_server_never_writes_a_token_to_its_log(server: Server) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    token = server.token(alice)
    ws = await server.open_ws(room, token)
    try:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "room-state"
    finally:
        await ws.close()
    headers = {"Authorization": f"Bearer {server.token(bob)}"}
    async with server.http() as http:
        assert (await http.get("/webrtc/config", headers=headers)).status_code == 200
    await asyncio.sleep(0.1)
    log = server.log()
    assert f"join room={room} user={alice}" in log  # the join was logged ...
    signature = token.rsplit(".", 1)[1]
    assert signature not in log, "... and so was the bearer token of the WebSocket URL"
    assert headers["Authorization"].rsplit(".", 1)[1] not in log
