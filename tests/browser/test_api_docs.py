"""The API docs work on a server without internet access: ``/docs`` (Swagger UI) loads
its script and style from the server itself (fastapi-offline's copies) and lists the
endpoints. The test namespace has only loopback, so a page that needed a CDN would stay
blank here (it did, before: Swagger UI came from cdn.jsdelivr.net)."""

from __future__ import annotations

import pytest
from pagetools import Harness


@pytest.mark.timeout(120)
async def test_the_api_docs_list_the_endpoints_with_nothing_from_outside(rd: Harness) -> None:
    room_page = await rd.open("docs")
    page = room_page.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await page.goto(f"{rd.server.url}/docs")
    offer = page.locator(".opblock-summary-path", has_text="/file-transfer/offer")
    await offer.first.wait_for(timeout=30_000)
    paths = await page.locator(".opblock-summary-path").all_inner_texts()
    for path in (
        "/webrtc/rooms/{room_id}/file-transfer/offer",
        "/webrtc/rooms/{room_id}/file-transfer/{transfer_id}/accept",
        "/webrtc/file-transfers",
        "/webrtc/config",
    ):
        assert any(shown.replace("\u200b", "") == path for shown in paths), (path, paths)
    await rd.shot(room_page, "swagger-ui")
    outside = [url for url in requested if not url.startswith(rd.server.url)]
    assert not outside, outside
    assert (await page.request.get(f"{rd.server.url}/redoc")).status == 404
