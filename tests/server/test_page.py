"""The room page is served, and guests get a token for a display name on a loopback
server (and only there, unless configured)."""

from __future__ import annotations

import posixpath
import re
from typing import Any

import jwt

from roomdrop.server.page import STATIC, guests_allowed
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


#: what a module loads: ``import … from "./x.js"`` and ``new URL("./x.js", import.meta.url)``
LOADS = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*|new URL\(\s*)["'](\.{1,2}/[^"']+)["']""")


async def test_every_module_the_page_loads_is_served_as_javascript(server: Server) -> None:
    """From index.html's script through every import and worker, each module is served
    (with a JavaScript type, revalidated), and none of the page's modules is left out."""
    async with server.http() as http:
        page = (await http.get("/")).text
        entry = re.findall(r'<script type="module" src="(/static/[^"]+)"', page)
        assert entry == ["/static/app.js"]
        seen: set[str] = set()
        todo = list(entry)
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            response = await http.get(path)
            assert response.status_code == 200, path
            assert "javascript" in response.headers["content-type"], path
            assert response.headers["cache-control"] == "no-cache", path
            for ref in LOADS.findall(response.text):
                todo.append(posixpath.normpath(posixpath.join(posixpath.dirname(path), ref)))
    ours = {f"/static/{p.name}" for p in STATIC.glob("*.js")}
    assert ours <= seen, f"modules no one loads: {sorted(ours - seen)}"
    for role in ("session", "transfers", "outgoing", "incoming", "links", "catchup"):
        assert f"/static/{role}.js" in seen


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
