"""`medallion docs`: the catalog on the real template, and the site as a person sees it in
headless Chromium (Debian's `chromium` driven by Playwright; no browser download)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import medallion

from medallion_cli.docsite.layout import crossings, layout

CHROMIUM = Path("/usr/bin/chromium")
TEMPLATE_TABLES = ["bronze_customers", "bronze_events", "silver_customers", "silver_events", "gold_daily_sales",
                   "gold_sales_by_segment"]
CLI_SECRET = "cli-secret-value-9876"
ENV_SECRET = "env-session-token-5432"
SRC = Path(__file__).resolve().parents[1] / "src"


def _csv(path: Path, header: str, rows: list[str]) -> None:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


EVENTS_HEADER = "event_id,user_id,event_type,amount,event_date,updated_at,region"


@pytest.fixture(scope="module")
def history_project(template_project, tmp_path_factory) -> Path:
    """The template after three runs: the first run, a run with one new valid and one invalid
    event, and a run where gold_daily_sales fails (its module has a syntax error)."""
    dest = tmp_path_factory.mktemp("docs") / "shop"
    shutil.copytree(template_project, dest)
    with pytest.MonkeyPatch.context() as mp:  # the hermetic fixture is per test; do the same here
        mp.setenv("HOME", str(dest.parent / "home"))
        for name in list(os.environ):
            if name.startswith(("AWS_", "MEDALLION_")):
                mp.delenv(name)
        r = medallion("run", "all", "-C", dest, "--quiet")
        assert r.exit_code == 0, r
        landing = dest / "data" / "landing" / "events"
        _csv(landing / "more.csv", EVENTS_HEADER, ["n1,5,purchase,10.0,2024-01-03,2024-01-03T12:00:00Z,north",
                                                    "n2,5,bogus,10.0,2024-01-03,2024-01-03T12:00:00Z,north"])
        r = medallion("run", "all", "-C", dest, "--quiet")
        assert r.exit_code == 0, r
        module = dest / "pipelines" / "gold_daily_sales.py"
        good = module.read_text()
        module.write_text(good + "\nbroken(\n")
        _csv(landing / "later.csv", EVENTS_HEADER, ["n3,5,purchase,3.0,2024-01-05,2024-01-05T12:00:00Z,north"])
        r = medallion("run", "all", "-C", dest, "--quiet")
        assert r.exit_code == 1, r
        module.write_text(good)
    return dest


@pytest.fixture(scope="module")
def site(history_project, tmp_path_factory) -> Path:
    """The site of ``history_project``, with a secret storage option on the command line and
    another in the environment."""
    out = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_SESSION_TOKEN", ENV_SECRET)
        r = medallion("docs", "generate", "-C", history_project, "--output", out, "--json",
                      "--storage-option", f"AWS_SECRET_ACCESS_KEY={CLI_SECRET}")
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    assert doc["output"] == str(out) and doc["tables"] == 6 and doc["runs"] == 3
    assert "wrote" in r.stderr and "index.html" in r.stderr  # narration says how to open it
    return out


# -- the catalog ----------------------------------------------------------------------
def test_catalog_describes_every_table_its_history_runs_and_quality(site, history_project):
    catalog = json.loads((site / "catalog.json").read_text())
    assert catalog["schema_version"] == 1 and catalog["project"]["name"] == "shop"
    tables = {t["table"]: t for t in catalog["tables"]}
    assert list(tables) == TEMPLATE_TABLES  # run order

    described = json.loads(medallion("tables", "-C", history_project, "--json").stdout)
    for info in described["tables"] if isinstance(described, dict) else described:
        if info.get("kind") == "layer":
            t = tables[info["table"]]
            assert (t["version"], t["rows"], t["files"], t["size_bytes"]) == (
                info["version"], info["rows"], info["files"], info["size_bytes"])
    events = tables["silver_events"]
    assert {c["name"]: c["type"] for c in events["schema"]}["event_id"] == "string"
    assert events["target"]["keys"] == ["event_id"] and events["upstream"] == ["bronze_events"]
    assert events["downstream"] == ["gold_daily_sales", "gold_sales_by_segment"]
    history = json.loads(medallion("history", "silver_events", "-C", history_project, "--json").stdout)["history"]
    assert [h["version"] for h in events["history"]] == [h["version"] for h in history]
    assert events["watermarks"][0]["column"] == "_ingested_at"
    assert events["quality_config"]["schemas"] == [{"name": "SilverEvents", "policy": "quarantine"}]
    nodes = {n["name"]: n for n in events["pipeline_nodes"]["nodes"]}
    assert nodes["silver_events"]["depends_on"] == ["normalized_events"]
    assert nodes["normalized_events"]["doc"].startswith("Trimmed, lower-case event types")
    assert tables["gold_sales_by_segment"]["inputs"][1]["label"] == "snapshot"

    # runs: newest first, per table, the failure with its error
    runs = catalog["runs"]
    assert [r["status"] for r in runs] == ["failed", "succeeded", "succeeded"]
    failed = {t["table"]: t for t in runs[0]["tables"]}
    assert failed["gold_daily_sales"]["status"] == "failed" and "SyntaxError" in failed["gold_daily_sales"]["error"]
    assert tables["gold_daily_sales"]["last_run"]["status"] == "failed"
    assert tables["gold_sales_by_segment"]["last_run"]["status"] == "written"

    # quality: one report per run that checked silver_events, and the quarantine's size
    invalid = [q["rows_invalid"] for q in events["quality"]]
    assert len(invalid) == 3 and invalid[1] == 1  # the `bogus` event type of the second run
    assert {c["check"] for c in events["quality"][1]["checks"]} == {"isin(['click', 'view', 'purchase', 'refund'])"}
    quarantined = json.loads(medallion("quality", "silver_events", "-C", history_project, "--json").stdout)
    assert events["quarantine"]["rows"] == quarantined["rows"] == sum(invalid)
    assert tables["bronze_events"]["quarantine"] is None


def test_no_secret_reaches_the_site(site):
    catalog = json.loads((site / "catalog.json").read_text())
    assert catalog["project"]["storage_options"]["AWS_SECRET_ACCESS_KEY"] == "***"
    assert catalog["project"]["storage_options"]["AWS_SESSION_TOKEN"] == "***"
    files = [p for p in site.rglob("*") if p.is_file()]
    assert len(files) == 10
    for path in files:
        text = path.read_text()
        assert CLI_SECRET not in text and ENV_SECRET not in text, path
        if path.suffix == ".html":  # nothing to fetch: the only URL is the SVG namespace
            assert set(re.findall(r"https?://[^\s\"'<>]+", text)) <= {"http://www.w3.org/2000/svg"}, path


def test_generate_writes_under_target_by_default_and_target_is_ignored(ran_project):
    r = medallion("docs", "generate", "-C", ran_project, "--quiet")
    assert r.exit_code == 0, r
    assert r.stdout == "" and r.stderr == ""
    assert (ran_project / "target" / "docs" / "index.html").is_file()
    assert (ran_project / "target" / "docs" / "tables" / "silver_events.html").is_file()
    assert "target/" in (ran_project / ".gitignore").read_text().splitlines()
    # a page of a table that is gone is removed on the next generate; other files stay
    stale = ran_project / "target" / "docs" / "tables" / "gone.html"
    stale.write_text("old")
    (ran_project / "target" / "docs" / "notes.txt").write_text("mine")
    assert medallion("docs", "generate", "-C", ran_project, "--quiet").exit_code == 0
    assert not stale.exists() and (ran_project / "target" / "docs" / "notes.txt").exists()


def test_generate_before_any_run_and_into_a_file(project, tmp_path):
    out = tmp_path / "site"
    r = medallion("docs", "generate", "-C", project, "--output", out, "--json")
    assert r.exit_code == 0, r
    catalog = json.loads((out / "catalog.json").read_text())
    assert catalog["runs"] == [] and all(not t["exists"] and t["last_run"] is None for t in catalog["tables"])
    assert "never run" in (out / "index.html").read_text()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    r = medallion("docs", "generate", "-C", project, "--output", a_file)
    assert r.exit_code == 2 and "is a file" in r.stderr, r


def test_layout_orders_rows_to_remove_crossings():
    # a and b feed d and c crosswise; listed in the order that crosses
    nodes, edges = ["a", "b", "c", "d"], [("a", "d"), ("b", "c")]
    lay = layout(nodes, edges)
    assert crossings(lay, edges) == 0
    assert {lay.boxes[n].column for n in "ab"} == {0} and {lay.boxes[n].column for n in "cd"} == {1}


# -- serve ----------------------------------------------------------------------------
def test_serve_says_the_url_serves_the_site_and_stops_on_ctrl_c(ran_project):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "medallion_cli", "docs", "serve", "--port", "0", "-C", str(ran_project)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        for line in proc.stderr:
            found = re.search(r"http://127\.0\.0\.1:\d+/", line)
            if found:
                url = found.group(0)
                break
        assert url, proc.stderr.read()
        with urllib.request.urlopen(url + "index.html", timeout=10) as resp:
            assert resp.status == 200 and "silver_events" in resp.read().decode()
        with urllib.request.urlopen(url + "catalog.json", timeout=10) as resp:
            assert json.loads(resp.read())["project"]["name"] == "shop"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in err and out == ""


def test_serve_on_a_busy_port_is_a_usage_error(ran_project):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = medallion("docs", "serve", "--port", str(port), "-C", ran_project)
    assert r.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr and "--port" in r.stderr, r


# -- in a browser ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: `apt-get install -y chromium` (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extras have it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


class Watched:
    """A page whose console errors, page errors and non-file requests are recorded."""

    def __init__(self, browser, width: int = 1300, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route) -> None:
        self.requests.append(route.request.url)
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            route.abort()

    def check_clean(self) -> None:
        assert self.errors == []
        assert self.requests and all(u.startswith("file://") for u in self.requests), self.requests

    def close(self) -> None:
        self.context.close()


def test_lineage_shows_every_table_and_contract_and_opens_table_pages(browser, site, tmp_path):
    w = Watched(browser)
    page = w.page
    page.goto((site / "index.html").as_uri())
    page.screenshot(path=str(tmp_path / "lineage.png"), full_page=True)
    for table in TEMPLATE_TABLES:
        assert page.locator(f'#lineage g.node[data-table="{table}"]').is_visible(), table
    labels = page.locator("#lineage .edge-label").all_text_contents()
    text = " ".join(" ".join(label.split()) for label in labels)
    for contract in ("files", "watermark on _ingested_at", "partitions on event_date", "window rolling_window_days",
                     "snapshot"):
        assert contract in text
    assert page.locator("#lineage .source").count() == 2  # the two landing folders
    # coloured by the last run: gold_daily_sales failed in it, the others succeeded
    stroke = page.locator('g.node[data-table="gold_daily_sales"] rect').get_attribute("stroke")
    assert stroke == "#c62828"
    assert page.locator('g.node[data-table="silver_events"] rect').get_attribute("stroke") == "#2e7d32"

    page.locator('#lineage g.node[data-table="silver_events"]').click()
    page.wait_for_url("**/tables/silver_events.html")
    page.screenshot(path=str(tmp_path / "table.png"), full_page=True)
    assert page.locator("h1").inner_text() == "silver_events"
    schema = page.locator("table.schema")
    assert "event_id" in schema.inner_text() and "timestamp" in schema.inner_text()
    history = page.locator("table.history tbody tr")
    assert history.count() >= 2 and "WRITE" in page.locator("table.history").inner_text()
    assert "Trimmed, lower-case event types" in page.locator("table.nodes").inner_text()
    page.get_by_role("link", name="gold_daily_sales").first.click()  # downstream link
    page.wait_for_url("**/tables/gold_daily_sales.html")
    assert "SyntaxError" in page.locator("main").inner_text()  # its last run's error
    assert page.locator("table.table-runs tbody tr").count() == 3
    w.check_clean()
    w.close()


def test_runs_and_quality_pages(browser, site, tmp_path):
    w = Watched(browser)
    page = w.page
    page.goto((site / "runs.html").as_uri())
    page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)
    assert page.locator("table.runs tbody tr").count() == 3
    assert page.locator("table.runs").inner_text().count("succeeded") == 2
    assert page.locator(".tablecharts .chart svg").count() == 2 * len(TEMPLATE_TABLES)  # duration and rows per table
    assert "SyntaxError" in page.locator("main").inner_text()  # the failed run's error
    # the per-table matrix has a column per run, told apart although the runs may share a second
    heads = page.locator("table.matrix").first.locator("thead th").all_text_contents()[1:]
    assert len(heads) == 3 and len(set(heads)) == 3, heads
    page.get_by_role("link", name="Quality").click()
    page.wait_for_url("**/quality.html")
    page.screenshot(path=str(tmp_path / "quality.png"), full_page=True)
    quarantine = page.locator("table.quarantine").inner_text()
    assert "silver_events__quarantine" in quarantine and "silver_customers__quarantine" in quarantine
    checks = page.locator("table.checks").last.inner_text()
    assert "event_type: isin" in checks and "invalid rows" in checks
    w.check_clean()
    w.close()
    assert all((tmp_path / f"{n}.png").stat().st_size > 10_000 for n in ("runs", "quality"))


# -- 50 tables ------------------------------------------------------------------------
FEEDS = 10


def _write_pipeline(project: Path, name: str, layer: str, medallion_section: str, body: str) -> None:
    (project / "conf" / "pipelines" / f"{name}.yml").write_text(
        f"run:\n  final_vars: [{name}]\n  inputs: {{}}\n  executor:\n    type: synchronous\n"
        f"  retry:\n    max_retries: 0\n  log_level: CRITICAL\n\nmedallion:\n  layer: {layer}\n{medallion_section}"
        f"  output: {name}\n  target:\n    table: {name}\n    mode: overwrite\n")
    (project / "pipelines" / f"{name}.py").write_text(f'"""{name}: generated for the docs test."""\n\n{body}')


def _fifty_tables(project: Path) -> None:
    """44 tables added to the template's 6: 10 feeds x bronze/silver, 20 gold joins, 4 reports."""
    for i in range(FEEDS):
        (project / "data" / "landing" / f"feed{i}").mkdir(parents=True)
        _write_pipeline(project, f"bronze_feed{i}", "bronze",
                        f"  source:\n    landing: data/landing/feed{i}\n    schema: {{id: int64, value: float64}}\n"
                        "  incremental:\n    strategy: files\n",
                        f"def bronze_feed{i}(landing):\n    return landing\n")
        _write_pipeline(project, f"silver_feed{i}", "silver", f"  source:\n    table: bronze_feed{i}\n",
                        f"def silver_feed{i}(bronze_feed{i}):\n    return bronze_feed{i}\n")
    for k in range(20):
        a, b = k % FEEDS, (k * 3 + 1) % FEEDS
        b = b if b != a else (a + 1) % FEEDS
        _write_pipeline(project, f"gold_join{k}", "gold",
                        f"  inputs:\n    silver_feed{a}:\n      table: silver_feed{a}\n"
                        f"    silver_feed{b}:\n      table: silver_feed{b}\n      read: snapshot\n",
                        f"def gold_join{k}(silver_feed{a}, silver_feed{b}):\n    return silver_feed{a}\n")
    for k in range(4):
        _write_pipeline(project, f"report{k}", "report",
                        f"  inputs:\n    gold_join{k}:\n      table: gold_join{k}\n"
                        f"    gold_join{k + 10}:\n      table: gold_join{k + 10}\n      read: snapshot\n",
                        f"def report{k}(gold_join{k}, gold_join{k + 10}):\n    return gold_join{k}\n")


def test_fifty_tables_stay_legible(browser, ran_project, tmp_path):
    _fifty_tables(ran_project)
    out = tmp_path / "site"
    r = medallion("docs", "generate", "-C", ran_project, "--output", out, "--json")
    assert r.exit_code == 0, r
    assert json.loads(r.stdout)["tables"] == 50
    w = Watched(browser)
    page = w.page
    page.goto((out / "index.html").as_uri())
    page.screenshot(path=str(tmp_path / "lineage-50.png"), full_page=False)
    nodes = page.locator("#lineage g.node")
    assert nodes.count() == 50
    # at 100% a box keeps its size (the graph scrolls instead of shrinking) ...
    boxes = [page.locator(f'#lineage g.node[data-table="{n}"] rect').bounding_box()
             for n in nodes.evaluate_all("els => els.map(e => e.getAttribute('data-table'))")]
    assert all(b is not None and b["width"] >= 150 and b["height"] >= 40 for b in boxes)
    # ... and no two boxes overlap
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            apart = (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                     or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])
            assert apart, (a, b)
    # names are whole (the longest is 21 characters) and the layers read left to right
    assert page.locator('g.node[data-table="gold_sales_by_segment"] .name').text_content() == "gold_sales_by_segment"
    x = {n: page.locator(f'g.node[data-table="{n}"] rect').bounding_box()["x"]
         for n in ("bronze_feed3", "silver_feed3", "gold_join3", "report3")}
    assert x["bronze_feed3"] < x["silver_feed3"] < x["gold_join3"] < x["report3"]
    # find a table: it is highlighted and scrolled into view
    page.fill("#find", "report3")
    assert page.locator('g.node.hit[data-table="report3"]').count() == 1
    assert page.locator('g.node[data-table="report3"]').is_visible()
    page.click("#zoom-fit")
    page.screenshot(path=str(tmp_path / "lineage-50-fit.png"), full_page=False)
    page.locator('g.node[data-table="report3"]').click()
    page.wait_for_url("**/tables/report3.html")
    assert "gold_join3" in page.locator("main").inner_text()
    w.check_clean()
    w.close()


def test_names_that_look_like_markup_are_escaped(project, tmp_path):
    """A landing folder named like HTML stays text: the SVG parses and no tag leaks in."""
    import xml.etree.ElementTree as ET

    config = project / "conf" / "pipelines" / "bronze_events.yml"
    odd = 'data/landing/ev <b>x</b> & "q"'
    config.write_text(config.read_text().replace("landing: data/landing/events", f"landing: '{odd}'"))
    out = tmp_path / "site"
    r = medallion("docs", "generate", "-C", project, "--output", out)
    assert r.exit_code == 0, r
    index = (out / "index.html").read_text()
    assert "<b>x</b>" not in index and "&lt;b&gt;x&lt;/b&gt;" in index
    svg = index[index.index("<svg"):index.index("</svg>") + len("</svg>")]
    root = ET.fromstring(svg)  # well-formed
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert f"landing folder: {odd}" in titles
    # no page fetches anything from the network: the only URL is the SVG namespace
    for page in out.rglob("*.html"):
        urls = set(re.findall(r"https?://[^\s\"'<>]+", page.read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (page, urls)


def test_run_documents_read_at_once_equal_show(history_project):
    from medallion_cli.project import load_project
    from medallion_cli.runrecords import RunRecords

    records = RunRecords(load_project(history_project))
    docs = records.documents(limit=None)
    assert [d["run_id"] for d in docs] == [r["run_id"] for r in records.list(limit=None)]
    assert docs == [records.show(d["run_id"]) for d in docs] and len(docs) == 3
    assert [d["run_id"] for d in records.documents(limit=1)] == [docs[0]["run_id"]]


def test_run_columns_are_told_apart_within_one_second():
    from medallion_cli.docsite.render import _run_heads

    runs = [{"started_at": "2026-11-29T15:08:58.1Z", "run_id": "20261129T150858Z-aaaaaa"},
            {"started_at": "2026-11-29T15:08:59.2Z", "run_id": "20261129T150859Z-bbbbbb"},
            {"started_at": "2026-11-29T15:08:59.7Z", "run_id": "20261129T150859Z-cccccc"}]
    assert _run_heads(runs, year=False) == ["11-29 15:08:58", "11-29 15:08:59 · bbbbbb", "11-29 15:08:59 · cccccc"]
    assert _run_heads(runs[:1]) == ["2026-11-29 15:08:58"]
