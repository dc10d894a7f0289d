"""`edgevl index`, `edgevl search` and `edgevl serve`: the photo app (`edgevl.app`, docs/app.md) on the command
line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgevl.cli.common import add_threads_flag, set_threads, subparser

DB_ENV = "EDGEVL_PHOTOS_DB"


def default_db() -> str:
    """`$EDGEVL_PHOTOS_DB`, else `$XDG_DATA_HOME/edgevl/photos.db` (~/.local/share/edgevl/photos.db)."""
    if os.environ.get(DB_ENV):
        return os.environ[DB_ENV]
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "edgevl", "photos.db")


def _parser(sub: argparse._SubParsersAction, name: str, help_text: str, description: str,
            threads: int | None = None) -> argparse.ArgumentParser:
    p = subparser(sub, name, help_text, description)
    p.add_argument("--db", default=default_db(),
                   help=f"photo database (SQLite); thumbnails and the vector cache go to DB.cache/ beside it "
                   f"(default from ${DB_ENV})")
    add_threads_flag(p, threads)
    return p


# ---------------------------------------------------------------------------------------------------- index
def add_index(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "index", "index a photo folder for search: embeddings, auto-tags, captions (incremental)",
                "Walks FOLDER, embeds every image (JPEG, PNG, WebP, GIF, TIFF, BMP; HEIC with the heif extra),\n"
                "tags it against a label list and captions it, into --db. Re-running indexes only new or changed\n"
                "files and forgets deleted ones; a database made with other models is re-indexed from scratch.\n"
                "Broken files are skipped and listed. Nothing is ever written into FOLDER. See docs/app.md.")
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="photo folders to index (searched recursively)")
    p.add_argument("--model", default="world",
                   help="'world' / 'world-vit' (the shipped world teachers, for `edgevl world make --format "
                   "photos` folders) or a registered model such as MobileCLIP-S0 with --pretrained")
    p.add_argument("--pretrained", default=None, help="weights file or model folder of --model (never downloaded)")
    p.add_argument("--package", default=None, metavar="DIR",
                   help="use the AOTInductor packages `edgevl compile` wrote to DIR instead of --model")
    p.add_argument("--captioner", default="auto",
                   help="'world', 'none', or a LightCap model folder; auto: the world captioner for world models, "
                   "none otherwise")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="auto-tag labels, one per line (default: the world's colour+shape names for world models, "
                   "else edgevl/app/labels.txt); changing it re-tags from stored embeddings")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass and per database commit")
    p.add_argument("--workers", type=int, default=2, help="threads decoding images while the model runs")
    p.add_argument("--processes", action="store_true", help="decode in worker processes instead of threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no list of skipped files")
    p.set_defaults(func=run_index)


def _check_db_outside(db: Path, folders: list[Path]) -> None:
    from edgevl.errors import ConfigError

    for folder in folders:
        if folder == db.parent or folder in db.parents:
            raise ConfigError(f"--db {db} is inside the photo folder {folder}; edgevl never writes into photo "
                              "folders, put the database elsewhere")


def run_index(args: argparse.Namespace) -> int:
    import edgevl
    from edgevl.app.catalog import Catalog
    from edgevl.app.engine import Engine, ModelSpec
    from edgevl.app.indexer import index_folder
    from edgevl.app.vectors import cache_dir, load
    from edgevl.errors import NoUsableInputError
    from edgevl.locks import output_lock

    set_threads(args)
    db, folders = Path(args.db).resolve(), [Path(f).resolve() for f in args.folders]
    _check_db_outside(db, folders)
    absolute = {k: str(Path(v).resolve()) if v else None for k, v in
                (("pretrained", args.pretrained), ("package", args.package), ("labels", args.labels))}
    captioner = args.captioner if args.captioner in ("auto", "world", "none") else str(Path(args.captioner).resolve())
    spec = ModelSpec(model=None if args.package else args.model, captioner=captioner, **absolute)
    with output_lock(cache_dir(db), "index"):
        engine = Engine(spec)
        edgevl.keep_freed_memory()
        catalog = Catalog(db)
        try:
            for folder in folders:
                report = index_folder(catalog, engine, folder, batch_size=args.batch_size, workers=args.workers,
                                      processes=args.processes, progress=not args.quiet)
                if report.reset_reason:
                    print(f"edgevl: {db} was made with other models or another edgevl ({report.reset_reason}); "
                          "re-indexed from scratch", file=sys.stderr)
                if not args.quiet:
                    for s in report.skipped:
                        print(f"edgevl: skipped {s.path}: {s.reason} ({s.kind})", file=sys.stderr)
                print(f"{folder}: {report.summary()}")
                usable = report.added + report.updated + report.unchanged + report.touched
                if not usable and report.skipped:
                    raise NoUsableInputError(f"none of the {len(report.skipped)} image files in {folder} is usable")
            load(catalog)  # build and persist the vector index now, so the first search is fast
        finally:
            catalog.close()
    return 0


# --------------------------------------------------------------------------------------------------- search
def add_search(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "search", "search indexed photos by text, by example image, or both (query arithmetic)",
                "Ranks the photos of --db by cosine similarity to the query: QUERY text, --image FILE, plus each\n"
                "--and term, minus each --minus term (a term naming an image file is an image). Examples:\n"
                "  edgevl search 'a red star'\n"
                "  edgevl search --image beach.jpg --and 'at night' --minus 'people'", threads=1)
    p.add_argument("query", nargs="?", default=None, help="text query")
    p.add_argument("--image", default=None, metavar="FILE", help="example image (catalogued or not)")
    p.add_argument("--and", dest="plus", action="append", default=[], metavar="TERM",
                   help="add a text or image term to the query (repeatable)")
    p.add_argument("--minus", action="append", default=[], metavar="TERM",
                   help="subtract a text or image term from the query (repeatable)")
    p.add_argument("-k", "--top", type=int, default=10, help="number of results")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object with every result and its details")
    out.add_argument("--open", action="store_true",
                     help="print only the paths, one per line, for piping (e.g. `| xargs -d '\\n' xdg-open`)")
    p.set_defaults(func=run_search)


def run_search(args: argparse.Namespace) -> int:
    import json

    from edgevl.app.catalog import Catalog
    from edgevl.app.engine import open_engine
    from edgevl.app.search import query_vector, ranked
    from edgevl.app.vectors import load

    set_threads(args)
    catalog = Catalog(args.db, readonly=True)
    try:
        engine = open_engine(catalog)
        query = query_vector(engine, catalog, args.query, args.image, args.plus, args.minus)
        hits = ranked(catalog, load(catalog), query, args.top)
    finally:
        catalog.close()
    if args.json:
        print(json.dumps({"query": {"text": args.query, "image": args.image, "and": args.plus, "minus": args.minus},
                          "results": [h.to_json() for h in hits]}, ensure_ascii=False, indent=1))
    for h in hits if not args.json else ():
        if args.open:
            print(h.row.path)
        else:
            tags = ", ".join(label for label, _ in h.row.tags)
            print(f"{h.score:.3f}  {h.row.path}" + (f"  \"{h.row.caption}\"" if h.row.caption else "")
                  + (f"  [{tags}]" if tags else ""))
    return 0


# ---------------------------------------------------------------------------------------------------- serve
def add_serve(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "serve", "a local web page to search and browse the indexed photos",
                "Serves a search page for --db: text search, a thumbnail grid with captions and tags,\n"
                "click a photo for similar ones, and an index-status page. Only catalogued files inside the\n"
                "indexed folders are served, read-only. Binds to 127.0.0.1 unless --host says otherwise.", threads=1)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; 0.0.0.0 exposes your photos to the network (there is no login)")
    p.add_argument("--port", type=int, default=8765, help="TCP port")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from edgevl.app.server import create_app, require_server

    uvicorn = require_server()
    set_threads(args)
    app = create_app(args.db)
    print(f"edgevl: serving {args.db} on http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
