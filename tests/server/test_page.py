"""The room page is served, and guests get a token for a display name on a loopback
server (and only there, unless configured)."""

from __future__ import annotations

from typing import Any

import jwt

from roomdrop.server.page import guests_allowed
from roomdrop.server.settings import Settings
from server.conftest import Server


async def test_the_page_and_its_files_are_served(server: Server) -> None:
    async with server.http() as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<html" in page.text.lower()
        assert page.headers["cache-control"] == "no-cache"
        script = await http.get("/static/app.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert script.headers["cache-control"] == "no-cache"
        missing = await http.get("/static/no-such-file.js")
        assert missing.status_code == 404


async def test_a_guest_on_a_loopback_server_gets_a_token_for_a_name(server: Server) -> None:
    async with server.http() as http:
        assert (await http.get("/webrtc/guest")).json() == {"enabled": True}
        answer = await http.post("/webrtc/guest", json={"name": "Ann Lee"})
        assert answer.status_code == 200
        body = answer.json()
        assert body["user_id"].startswith("Ann Lee#") and len(body["user_id"]) == 12
        claims = jwt.decode(body["token"], server.secret, algorithms=["HS256"])
        assert claims["sub"] == body["user_id"]
        config = await http.get(
            "/webrtc/config", headers={"Authorization": f"Bearer {body['token']}"}
        )
        assert config.status_code == 200
        for bad in ({"name": ""}, {"name": "x" * 65}, {"name": "<b>"}, {"nom": "a"}):
            assert (await http.post("/webrtc/guest", json=bad)).status_code == 422, bad


async def test_guests_are_refused_where_they_are_turned_off(start_server: Any) -> None:
    server = await start_server(ROOMDROP_GUESTS="false")
    async with server.http() as http:
        assert (await http.get("/webrtc/guest")).json() == {"enabled": False}
        answer = await http.post("/webrtc/guest", json={"name": "Ann"})
        assert answer.status_code == 403
        assert answer.json() == {
            "detail": "guest sign-in is off on this server: use a token",
            "code": "forbidden",
        }


def test_guests_default_to_loopback_binds_only() -> None:
    assert guests_allowed(Settings(host="127.0.0.1"))
    assert guests_allowed(Settings(host="::1"))
    assert guests_allowed(Settings(host="localhost"))
    assert not guests_allowed(Settings(host="0.0.0.0"))
    assert not guests_allowed(Settings(host="example.org"))
    assert guests_allowed(Settings(host="0.0.0.0", guests=True))
    assert not guests_allowed(Settings(host="127.0.0.1", guests=False))
