"""``medallion docs``: generate and serve the project's report site."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medallion_cli.cli.options import DebugOpt, JsonOpt, ProjectOpt, QuietOpt, StorageOpt, load, setup

app = typer.Typer(
    help="A static report site: lineage, tables, Delta history, runs and quality.\n\n"
    "Example: medallion docs generate · medallion docs serve --port 8000",
    no_args_is_help=True,
    rich_markup_mode=None,
)

OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Folder to write the site to (default: <project>/target/docs).",
                 show_default=False, metavar="DIR"),
]


@app.command("generate")
def generate(
    output: OutputOpt = None,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write the report site (HTML pages and catalog.json); open index.html in a browser,
    no network needed.

    Example: medallion docs generate · medallion docs generate --output /tmp/site --json
    """
    from medallion_cli.docsite.site import generate as write_site

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    site = write_site(load(project_dir, storage_option), output)
    out.status("wrote", f"{len(site.files)} files ({site.tables} tables, {site.runs} runs) to {site.output}")
    out.info(f"open {site.index}")
    if json_mode:
        out.json(site.to_dict())


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on (0: any free port).")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    output: OutputOpt = None,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Generate the site, then serve it over HTTP until Ctrl-C.

    Example: medallion docs serve · medallion docs serve --port 8080 --host 0.0.0.0
    """
    from medallion_cli.docsite.site import generate as write_site
    from medallion_cli.docsite.site import make_server, server_url

    out = setup(quiet=quiet, debug=debug)
    site = write_site(load(project_dir, storage_option), output)
    out.status("wrote", f"{len(site.files)} files to {site.output}")
    server = make_server(site.output, host, port)
    out.status("serving", f"{server_url(server)}  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        out.status("stopped", "docs server")
    finally:
        server.server_close()
