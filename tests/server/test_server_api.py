"""The REST API's refusals against a real ``roomdrop serve``: every status each route can
answer is provoked there, comes with the error body, and is declared for that route in
``/openapi.json`` with that body (and nothing is declared that the route cannot answer);
with the shared state out of reach, every route answers only what it declares; a body
that is not UTF-8 is a 422 like malformed JSON; and a schema-driven fuzzer (schemathesis)
finds no undocumented status and no response off its schema."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from redistools import RedisServer, start_redis
from server.conftest import launch

if TYPE_CHECKING:
    from conftest import Deployment, Server

PREFIX = "/webrtc/rooms/{room_id}/file-transfer"
OFFER = PREFIX + "/offer"
TRANSFER = PREFIX + "/{transfer_id}"
SHA = "cd" * 32
MAX_FILE_SIZE = 1_000_000
MAX_TRANSFERS_PER_USER = 3
ERROR_KEYS = {"detail", "code", "errors"}
SCHEMATHESIS_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
)
"""Every check but the ones that judge what this API refuses on purpose: JSON Schema's
``integer`` admits ``10.0``, which the protocol refuses (positive_data_acceptance), and
``/offer`` under DELETE is the transfer route with transfer_id ``offer`` (422, not 405)."""


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {
        "ROOMDROP_GUESTS": "false",
        "ROOMDROP_MAX_FILE_SIZE": str(MAX_FILE_SIZE),
        "ROOMDROP_MAX_TRANSFERS_PER_USER": str(MAX_TRANSFERS_PER_USER),
    }


@pytest.fixture(scope="module")
def e2e_env() -> dict[str, str]:
    # clear offers keep the provocations short; e2e-required and e2e-failed are provoked
    # on a server of the default settings in test_e2e_offers.py
    return {"ROOMDROP_REQUIRE_E2E": "false"}


def fresh(*roles: str) -> list[str]:
    tag = uuid.uuid4().hex[:10]
    return [f"{role}-{tag}" for role in roles]


def offer_body(receiver: str, size: int = 1000, **extra: Any) -> dict[str, Any]:
    return {"receiver_id": receiver, "filename": "a.bin", "file_size": size, "sha256": SHA, **extra}


def declared(spec: dict[str, Any], template: str, method: str) -> dict[int, str | None]:
    """The refusals ``method template`` declares: status -> the schema it names."""
    out: dict[int, str | None] = {}
    for status, response in spec["paths"][template][method]["responses"].items():
        if not status.startswith("2"):
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            out[int(status)] = schema.get("$ref", "").rsplit("/", 1)[-1] or None
    return out


def check_refusal(response: httpx.Response, where: str) -> dict[str, Any]:
    """``response`` carries the error body: detail and code (and maybe errors), no more."""
    body = response.json()
    assert isinstance(body, dict) and set(body) <= ERROR_KEYS, f"{where}: {response.text}"
    assert isinstance(body.get("detail"), str) and body["detail"], f"{where}: {response.text}"
    assert isinstance(body.get("code"), str) and body["code"], f"{where}: {response.text}"
    if "errors" in body:
        assert isinstance(body["errors"], list) and body["errors"], where
    return dict(body)


async def openapi(server: Server) -> dict[str, Any]:
    response = await server.request(None, "GET", "/openapi.json")
    assert response.status_code == 200, response.text
    return dict(response.json())


def operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [(path, method) for path, ops in spec["paths"].items() for method in ops]


async def test_every_refusal_of_every_route_is_provoked_declared_and_has_the_error_body(
    server: Server,
) -> None:
    spec = await openapi(server)
    room, elsewhere, alice, bob, mallory = fresh("room", "elsewhere", "alice", "bob", "mallory")
    await server.pair(room, alice, bob)
    await server.connect(elsewhere, mallory)
    offers = f"/webrtc/rooms/{room}/file-transfer/offer"

    async def offered() -> str:
        response = await server.request(alice, "POST", offers, json=offer_body(bob))
        assert response.status_code == 200, response.text
        return str(response.json()["transfer_id"])

    pending = await offered()
    cancelled = await offered()
    gone = await server.request(alice, "DELETE", f"/webrtc/rooms/{room}/file-transfer/{cancelled}")
    assert gone.status_code == 200, gone.text
    unknown = str(uuid.uuid4())

    def at(tid: str, action: str | None = None) -> str:
        path = f"/webrtc/rooms/{room}/file-transfer/{tid}"
        return f"{path}/{action}" if action else path

    Call = Callable[[], Awaitable[httpx.Response]]

    def call(user: str | None, method: str, path: str, **kwargs: Any) -> Call:
        return lambda: server.request(user, method, path, **kwargs)

    async def over_the_limit() -> httpx.Response:
        for _ in range(MAX_TRANSFERS_PER_USER - 1):  # `pending` is the first live one
            await offered()
        return await server.request(alice, "POST", offers, json=offer_body(bob))

    provoke: list[tuple[str, str, int, Call]] = [
        ("/webrtc/config", "get", 401, call(None, "GET", "/webrtc/config")),
        ("/webrtc/file-transfers", "get", 401, call(None, "GET", "/webrtc/file-transfers")),
        (
            "/webrtc/file-transfers",
            "get",
            422,
            call(alice, "GET", "/webrtc/file-transfers", params={"status": "x"}),
        ),
        (OFFER, "post", 401, call(None, "POST", offers, json=offer_body(bob))),
        (OFFER, "post", 403, call(mallory, "POST", offers, json=offer_body(bob))),
        (OFFER, "post", 413, call(alice, "POST", offers, json=offer_body(bob, MAX_FILE_SIZE + 1))),
        (OFFER, "post", 422, call(alice, "POST", offers, json=offer_body(bob, chunk_size=0))),
        (OFFER, "post", 429, over_the_limit),
    ]
    for action, method in [
        ("accept", "post"),
        ("reject", "post"),
        ("pause", "post"),
        ("resume", "post"),
        ("progress", "get"),
        (None, "delete"),
    ]:
        template = f"{TRANSFER}/{action}" if action else TRANSFER
        verb = method.upper()
        provoke += [
            (template, method, 401, call(None, verb, at(pending, action))),
            (template, method, 404, call(bob, verb, at(unknown, action))),
            (template, method, 422, call(bob, verb, at("not-a-uuid", action))),
        ]
        if action in ("accept", "reject"):  # only the receiver may
            provoke.append((template, method, 403, call(alice, verb, at(pending, action))))
        if action in ("accept", "reject", None):  # the cancelled one cannot be
            provoke.append((template, method, 409, call(bob, verb, at(cancelled, action))))
        if action in ("pause", "resume"):  # the pending one cannot be
            provoke.append((template, method, 409, call(bob, verb, at(pending, action))))
    provoke += [
        ("/webrtc/guest", "post", 403, call(None, "POST", "/webrtc/guest", json={"name": "ann"})),
        ("/webrtc/guest", "post", 422, call(None, "POST", "/webrtc/guest", json={"name": "!"})),
    ]

    seen: dict[tuple[str, str], set[int]] = {}
    for template, method, status, make in provoke:
        where = f"{method.upper()} {template} -> {status}"
        response = await make()
        assert response.status_code == status, f"{where}: got {response.text}"
        check_refusal(response, where)
        assert declared(spec, template, method).get(status) == "ErrorBody", (
            f"{where}: not declared with ErrorBody: {declared(spec, template, method)}"
        )
        seen.setdefault((template, method), set()).add(status)
    # and nothing is declared that the route cannot answer (503: the next test)
    for template, method in operations(spec):
        assert set(declared(spec, template, method)) - {503} == seen.get((template, method), set())


async def test_with_the_shared_state_out_of_reach_each_route_answers_only_what_it_declares(
    deployments: Callable[[RedisServer | None], Deployment], tmp_path: Path
) -> None:
    redis = start_redis(tmp_path / "redis")
    try:
        (server,) = await deployments(redis).start(1, ROOMDROP_GUESTS="false")
        spec = await openapi(server)
        redis.stop()
        room, alice = fresh("room", "alice")
        tid = str(uuid.uuid4())
        answered_503 = set()
        for template, method in operations(spec):
            path = template.replace("{room_id}", room).replace("{transfer_id}", tid)
            body = offer_body("bob") if template == OFFER else None
            body = {"name": "ann"} if template == "/webrtc/guest" else body
            response = await server.request(alice, method.upper(), path, json=body)
            where = f"{method.upper()} {template} -> {response.status_code}"
            if response.status_code == 200:
                continue
            assert response.status_code in declared(spec, template, method), where
            if check_refusal(response, where)["code"] == "backend-unavailable":
                assert response.status_code == 503, where
                answered_503.add((template, method))
        needs = {op for op in operations(spec) if 503 in declared(spec, *op)}
        assert answered_503 == needs
        assert len(needs) >= 8  # every transfer route, the list, the offer, /metrics
    finally:
        redis.stop()


async def test_a_body_that_is_not_utf8_is_422_with_the_error_body_like_malformed_json(
    server: Server,
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    await server.pair(room, alice, bob)
    headers = {**server.headers(alice), "Content-Type": "application/json"}
    path = f"/webrtc/rooms/{room}/file-transfer/offer"

    async def post(raw: bytes) -> httpx.Response:
        async with server.http() as http:
            return await http.post(path, content=raw, headers=headers)

    for raw in (b'{"filename": "\xff"}', b"\xc3\x28", b"\x80"):
        response = await post(raw)
        assert response.status_code == 422, f"{raw!r}: {response.text}"
        body = check_refusal(response, repr(raw))
        assert body["code"] == "protocol-error", body
        assert body["detail"].startswith("invalid JSON: 'utf-8' codec can't decode"), body
    malformed = await post(b"{")
    assert malformed.status_code == 422, malformed.text
    body = check_refusal(malformed, "malformed")
    assert body["code"] == "protocol-error" and body["detail"].startswith("invalid JSON: "), body
    assert body["errors"][0]["type"] == "json_invalid", body
    listed = await server.request(bob, "GET", "/webrtc/file-transfers")
    assert listed.json() == []


async def test_a_request_that_fails_validation_names_the_field_and_lists_every_error(
    server: Server,
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    await server.pair(room, alice, bob)
    path = f"/webrtc/rooms/{room}/file-transfer/offer"
    response = await server.request(alice, "POST", path, json={"receiver_id": bob})
    assert response.status_code == 422, response.text
    body = check_refusal(response, "missing fields")
    assert body["code"] == "protocol-error"
    assert body["detail"] == "body.filename: Field required (and 2 more)", body
    assert [e["loc"] for e in body["errors"]] == [
        ["body", "filename"],
        ["body", "file_size"],
        ["body", "sha256"],
    ]


async def test_a_schema_driven_fuzzer_finds_no_undocumented_status_and_no_off_schema_reply(
    tmp_path: Path,
) -> None:
    server = await asyncio.to_thread(launch, tmp_path / "serve", {})
    try:
        room, alice, bob = fresh("room", "alice", "bob")
        await server.pair(room, alice, bob)  # so that some offers get through
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{server.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {server.token(alice)}",
            "--checks",
            ",".join(SCHEMATHESIS_CHECKS),
            "--max-examples",
            "25",
            "--seed",
            "12",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--no-color",
        ]
        run = await asyncio.to_thread(
            subprocess.run,
            command,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        report = run.stdout + run.stderr
        assert run.returncode == 0, report
        assert "13 selected / 13 total" in report, report
        assert " passed" in report and "generated" in report, report
    finally:
        await server.close_clients()
        complaint = server.stop()
        assert complaint is None, complaint
