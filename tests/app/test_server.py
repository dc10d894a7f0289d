"""`edgevl serve`: the API, path traversal refused, localhost by default, photo folders never written."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
from photo_helpers import tree

from edgevl.cli import build_parser

pytest.importorskip("fastapi", reason="the app extra (fastapi) is not installed")


def test_search_similar_status_thumbnails_and_photos(library: dict) -> None:
    client = library["client"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text
    results = client.get("/api/search", params={"q": "a red star", "k": 5}).json()["results"]
    assert len(results) == 5 and results[0]["score"] >= results[-1]["score"]
    first = results[0]
    assert {"caption", "tags", "thumb", "photo", "name"} <= set(first) and first["caption"]
    thumb = client.get(first["thumb"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    photo = client.get(first["photo"])
    assert photo.status_code == 200 and photo.content == Path(first["path"]).read_bytes()
    near = client.get(f"/api/similar/{first['id']}", params={"k": 4}).json()["results"]
    assert near[0]["id"] == first["id"] and len(near) == 4
    assert client.get("/api/similar/999999").status_code == 404
    status = client.get("/api/status").json()
    assert status["images"] == 50 and status["skipped_by_kind"] == {"empty": 1, "outside_root": 1}
    assert client.get("/status").status_code == 200


@pytest.mark.parametrize("url", [
    "/photo/1/../secret.png",
    "/photo/1/..%2Fsecret.png",
    "/photo/1/%2E%2E/secret.png",
    "/photo/1/beach/%2e%2e/%2e%2e/secret.png",
    "/photo/1/%252e%252e/secret.png",
    "/photo/1/..%5Csecret.png",
    "/photo/1//etc/passwd",
    "/photo/1/%2Fetc%2Fpasswd",
    "/photo/1/beach/escape.png",  # a symbolic link inside the folder that leaves it
    "/photo/1/notes.txt",  # inside the folder but not a catalogued image
    "/photo/2/beach/IMG_00000.png",  # no such indexed folder
    "/photo/1/beach/IMG_00000.png%00.txt",
])
def test_path_traversal_is_refused(live: str, library: dict, url: str) -> None:
    """Sent byte for byte (http.client does not normalise `..`) to a real uvicorn server."""
    host, port = live.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", url)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status in (400, 404, 422), url
    assert body != library["secret"].read_bytes() and b"root:" not in body


def test_photo_folders_are_never_written(library: dict) -> None:
    client = library["client"]
    for hit in client.get("/api/search", params={"q": "a blue circle", "k": 50}).json()["results"]:
        client.get(hit["thumb"])
    client.get("/api/status")
    assert tree(library["folder"]) == library["before"]
    assert any((library["db"].parent / "photos.db.cache" / "thumbs").rglob("*.jpg"))


def test_serve_binds_to_localhost_by_default(live: str) -> None:
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    assert live.split(":")[0] == "127.0.0.1"
    conn = http.client.HTTPConnection(live, timeout=10)
    conn.request("GET", "/api/status")
    assert conn.getresponse().status == 200
