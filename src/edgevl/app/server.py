"""`edgevl serve`: a small FastAPI app over a photo database: search page, thumbnails, similar photos, status.

It only reads the database and the photos, and only serves a file when it is catalogued, its path has no `..`
or absolute part, and it resolves (symbolic links followed) to a file inside its indexed folder. Thumbnails are
made on first request into `<db>.cache/thumbs/` beside the database, never inside a photo folder.
"""

from __future__ import annotations

import io
import threading
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, ImageOps

from edgevl.app.catalog import Catalog, Row
from edgevl.app.search import Hit, query_vector, ranked, similar
from edgevl.app.vectors import VectorIndex, cache_dir, load
from edgevl.errors import ConfigError
from edgevl.io import atomic_write_bytes

THUMB_SIDE = 320
MAX_RESULTS = 200


def require_server() -> Any:
    """The uvicorn module, or a one-line ConfigError saying which extra to install."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise ConfigError("edgevl serve needs FastAPI and uvicorn: pip install 'edgevl[app]'") from None
    return uvicorn


def safe_file(roots: dict[int, str], root_id: int, relative: str) -> Path | None:
    """The file `relative` names inside indexed folder `root_id`, or None when the path tries to leave it:
    an unknown root, an absolute or `..` part, a NUL, or a symbolic link that resolves outside the folder."""
    root = roots.get(root_id)
    parts = PurePosixPath(relative).parts
    if root is None or not parts or "\0" in relative or "\\" in relative or relative.startswith("/") \
            or ".." in parts:
        return None
    base = Path(root).resolve()
    candidate = Path(root, *parts)
    try:
        target = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if base not in target.parents or not target.is_file():
        return None
    return candidate


class _State:
    """What the app shares between requests: the read-only catalog, the models (loaded on the first query) and
    the vector index (reloaded when an `edgevl index` run committed since)."""

    def __init__(self, db: str | Path) -> None:
        self.catalog = Catalog(db, readonly=True)
        self.lock = threading.Lock()
        self.engine: Any = None
        self.index: VectorIndex | None = None
        self.index_generation = -1
        self.thumbs = cache_dir(db) / "thumbs"

    def vectors(self) -> VectorIndex:
        generation = self.catalog.generation
        if self.index is None or generation != self.index_generation:
            self.index, self.index_generation = load(self.catalog), generation
        return self.index

    def models(self) -> Any:
        if self.engine is None:
            from edgevl.app.engine import open_engine

            self.engine = open_engine(self.catalog)
        return self.engine

    def photo_url(self, row: Row) -> str:
        root = self.catalog.roots().get(row.root_id, "")
        return f"/photo/{row.root_id}/{Path(row.path).relative_to(root).as_posix()}"

    def hit_json(self, hit: Hit) -> dict[str, Any]:
        root = self.catalog.roots().get(hit.row.root_id, "")
        return {"id": hit.row.id, "score": round(hit.score, 4), "path": hit.row.path,
                "name": str(Path(hit.row.path).relative_to(root)), "caption": hit.row.caption,
                "tags": [{"label": label, "p": p} for label, p in hit.row.tags],
                "width": hit.row.width, "height": hit.row.height,
                "thumb": f"/thumb/{hit.row.id}", "photo": self.photo_url(hit.row)}

    def thumbnail(self, row: Row) -> Path | None:
        """The cached JPEG thumbnail of a catalogued image (made now if missing), None if the file is gone."""
        out = self.thumbs / row.sha256[:2] / f"{row.sha256}-{THUMB_SIDE}.jpg"
        if out.is_file():
            return out
        root = self.catalog.roots().get(row.root_id, "")
        source = safe_file(self.catalog.roots(), row.root_id, Path(row.path).relative_to(root).as_posix())
        if source is None:
            return None
        try:
            with Image.open(source) as img:
                img.draft("RGB", (THUMB_SIDE, THUMB_SIDE))
                thumb = ImageOps.exif_transpose(img).convert("RGB")
            thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
        except (OSError, ValueError, SyntaxError):
            return None
        buf = io.BytesIO()
        thumb.save(buf, format="JPEG", quality=82)
        out.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_bytes(out, buf.getvalue())

    def status(self) -> dict[str, Any]:
        c = self.catalog
        skipped = c.skipped()
        kinds: dict[str, int] = {}
        for s in skipped:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
        index = self.vectors()
        db_bytes = sum(p.stat().st_size for p in c.path.parent.glob(c.path.name + "*") if p.is_file())
        return {"database": str(c.path), "database_bytes": db_bytes, "images": c.count(),
                "roots": list(c.roots().values()), "fingerprint": c.meta("fingerprint"),
                "vector_index": "exact" if index.exact else "usearch HNSW", "generation": c.generation,
                "skipped_by_kind": kinds,
                "skipped": [{"path": s.path, "kind": s.kind, "reason": s.reason} for s in skipped[:500]]}


def create_app(db: str | Path) -> Any:
    """The FastAPI app serving photo database `db` (read-only)."""
    require_server()
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    state = _State(db)
    static = Path(str(resources.files("edgevl.app").joinpath("static")))
    app = FastAPI(title="edgevl photos", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.photos = state
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    def index_page() -> FileResponse:
        return FileResponse(static / "index.html")

    @app.get("/status", include_in_schema=False)
    def status_page() -> FileResponse:
        return FileResponse(static / "status.html")

    @app.get("/api/search")
    def api_search(q: str = Query("", max_length=500), k: int = Query(48, ge=1, le=MAX_RESULTS),
                   minus: str = Query("", max_length=500)) -> dict[str, Any]:
        if not q.strip():
            return {"results": []}
        with state.lock:
            engine = state.models()
            query = query_vector(engine, state.catalog, text=q, minus=[minus] if minus.strip() else [])
            hits = ranked(state.catalog, state.vectors(), query, k)
            return {"results": [state.hit_json(h) for h in hits]}

    @app.get("/api/similar/{image_id}")
    def api_similar(image_id: int, k: int = Query(48, ge=1, le=MAX_RESULTS)) -> dict[str, Any]:
        with state.lock:
            try:
                hits = similar(state.catalog, state.vectors(), image_id, k)
            except ConfigError:
                raise HTTPException(404, "no such image") from None
            return {"results": [state.hit_json(h) for h in hits]}

    @app.get("/api/status")
    def api_status() -> dict[str, Any]:
        with state.lock:
            return state.status()

    @app.get("/thumb/{image_id}")
    def thumb(image_id: int) -> FileResponse:
        with state.lock:
            row = state.catalog.rows([image_id]).get(image_id)
        path = state.thumbnail(row) if row is not None else None
        if path is None:
            raise HTTPException(404, "no such image")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    @app.get("/photo/{root_id}/{relative:path}")
    def photo(root_id: int, relative: str) -> FileResponse:
        with state.lock:
            path = safe_file(state.catalog.roots(), root_id, relative)
            if path is None or state.catalog.find(str(path)) is None:
                raise HTTPException(404, "not found")
        return FileResponse(path, headers={"X-Content-Type-Options": "nosniff"})

    return app
