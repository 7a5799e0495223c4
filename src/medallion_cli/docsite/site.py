"""Write the docs site to a folder, and serve a folder over HTTP (stdlib only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medallion_cli.errors import UsageError

DEFAULT_OUTPUT = Path("target") / "docs"


@dataclass(frozen=True)
class DocsSite:
    """What ``medallion docs generate`` wrote."""

    output: Path
    files: tuple[str, ...]  # relative to ``output``
    tables: int
    runs: int

    @property
    def index(self) -> Path:
        return self.output / "index.html"

    def to_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "index": str(self.index), "catalog": str(self.output / "catalog.json"),
                "files": list(self.files), "tables": self.tables, "runs": self.runs}


def generate(project: Any, output: Path | None = None) -> DocsSite:
    """Build the catalog of ``project`` and write the site into ``output``
    (default ``<project>/target/docs``): ``index.html`` (lineage), ``runs.html``,
    ``quality.html``, ``tables/<table>.html`` and ``catalog.json``.

    Table pages of tables that no longer exist are removed when the folder holds an earlier
    site (a ``catalog.json``); nothing else in it is touched.
    """
    from medallion_cli.docsite.catalog import build_catalog
    from medallion_cli.docsite.render import index_page, quality_page, runs_page, table_file, table_page
    from medallion_cli.storage import scrub

    output = (output if output is not None else project.root / DEFAULT_OUTPUT).absolute()
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file", hint="name a folder (it is created if missing)")
    catalog = build_catalog(project)
    pages: dict[str, str] = {"index.html": index_page(catalog), "runs.html": runs_page(catalog),
                             "quality.html": quality_page(catalog)}
    for t in catalog["tables"]:
        pages[f"tables/{table_file(t['table'])}"] = table_page(catalog, t)
    pages["catalog.json"] = json.dumps(catalog, indent=2, default=str) + "\n"
    earlier = (output / "catalog.json").is_file()
    (output / "tables").mkdir(parents=True, exist_ok=True)
    if earlier:
        for old in (output / "tables").glob("*.html"):
            if f"tables/{old.name}" not in pages:
                old.unlink()
    for rel, text in pages.items():
        # Storage options are masked in the catalog already; scrub() also replaces any
        # known secret a run error or a command line might have carried.
        (output / rel).write_text(scrub(text), encoding="utf-8")
    return DocsSite(output, tuple(pages), len(catalog["tables"]), len(catalog["runs"]))


def make_server(directory: Path, host: str = "127.0.0.1", port: int = 8000) -> Any:
    """An HTTP server over ``directory`` (not started: call ``serve_forever()``), quiet
    (no request log on stderr). Port 0 picks a free port (``server.server_address``)."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

    try:
        return ThreadingHTTPServer((host, port), functools.partial(Handler, directory=str(directory)))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         hint="pick another port with --port (0: any free port)") from None


def server_url(server: Any) -> str:
    host, port = server.server_address[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
