"""Running a graph of tables: independent tables at the same time (--threads), a failure
skips only what is downstream of it, --fail-fast, the summary of succeeded/failed/skipped."""

from __future__ import annotations

import json
import shutil
import threading

import polars as pl
import pytest
from deltalake import DeltaTable

from conftest import medallion
from medallion_cli.errors import ExitCode, PipelineError

# Columns that differ between two runs by design (times and run ids).
VOLATILE = ("_ingested_at", "_run_id", "_quarantined_at")


def add_gold2(project, *, fail: bool = False) -> None:
    """A second gold table, independent of the first: pipeline gold2 writes gold_other."""
    conf = project / "conf"
    text = (conf / "pipelines" / "gold_daily_sales.yml").read_text()
    assert "    table: gold_daily_sales\n" in text
    (conf / "pipelines" / "gold2.yml").write_text(text.replace("    table: gold_daily_sales\n", "    table: gold_other\n"))
    shutil.copy(project / "pipelines" / "gold_daily_sales.py", project / "pipelines" / "gold2.py")
    cfg = (conf / "project.yml").read_text()
    assert "layers: [bronze, silver, gold]" in cfg
    (conf / "project.yml").write_text(cfg.replace("layers: [bronze, silver, gold]", "layers: [bronze, silver, gold, gold2]"))
    if fail:
        fail_pipeline(project, "gold2")


def fail_pipeline(project, name: str) -> None:
    """Make pipeline ``name`` raise ``ValueError("boom in NAME")`` in its output node."""
    module = project / "pipelines" / f"{name}.py"
    marker = {"gold": "    return daily_sales.sort", "gold2": "    return daily_sales.sort",
              "silver": "    return normalized_events.select"}[name]
    text = module.read_text()
    assert marker in text
    module.write_text(text.replace(marker, f'    raise ValueError("boom in {name}")\n{marker}', 1))


def exists(project, table: str) -> bool:
    return DeltaTable.is_deltatable(str(project / "lake" / table))


def contents(project, table: str) -> pl.DataFrame:
    df = pl.read_delta(str(project / "lake" / table))
    df = df.drop([c for c in df.columns if c in VOLATILE])
    return df.sort(df.columns)


def by_table(doc: dict) -> dict[str, dict]:
    return {layer["table"]: layer for layer in doc["layers"]}


def test_independent_tables_run_at_the_same_time(project, tmp_path):
    """gold and gold2 each wait (up to 20 s) for the other to have started: with two threads
    both see the other, so they really ran concurrently."""
    add_gold2(project)
    for name in ("gold", "gold2"):
        module = project / "pipelines" / f"{name}.py"
        other = "gold2" if name == "gold" else "gold"
        module.write_text(module.read_text().replace("    return daily_sales.sort", (
            f"    import pathlib, time\n"
            f"    pathlib.Path({str(tmp_path / name)!r}).touch()\n"
            f"    deadline = time.monotonic() + 20\n"
            f"    while not pathlib.Path({str(tmp_path / other)!r}).exists() and time.monotonic() < deadline:\n"
            f"        time.sleep(0.02)\n"
            f"    pathlib.Path({str(tmp_path / (name + '.saw'))!r}).write_text(str(pathlib.Path({str(tmp_path / other)!r}).exists()))\n"
            f"    return daily_sales.sort"), 1))
    r = medallion("run", "all", "-C", project, "--threads", "2", "--json")
    assert r.exit_code == 0, r
    assert (tmp_path / "gold.saw").read_text() == "True" and (tmp_path / "gold2.saw").read_text() == "True"
    doc = json.loads(r.stdout)
    assert doc["status"] == "succeeded" and doc["failed"] == [] and doc["skipped"] == []
    assert doc["succeeded"] == ["bronze_events", "silver_events", "gold_daily_sales", "gold_other"]
    # Both commits and both watermarks landed (the state file is shared by the threads).
    assert DeltaTable(str(project / "lake" / "gold_daily_sales")).version() == 0
    assert DeltaTable(str(project / "lake" / "gold_other")).version() == 0
    marks = {w["table"] for w in json.loads(medallion("watermark", "show", "-C", project, "--json").stdout)["watermarks"]}
    assert {"gold_daily_sales", "gold_other"} <= marks


def test_parallel_run_gives_what_a_sequential_run_gives(project, tmp_path):
    add_gold2(project)
    twin = tmp_path / "twin"
    shutil.copytree(project, twin)
    parallel = medallion("run", "all", "-C", project, "--threads", "4", "--json")
    sequential = medallion("run", "all", "-C", twin, "--threads", "1", "--json")
    assert parallel.exit_code == 0, parallel
    assert sequential.exit_code == 0, sequential
    p, s = json.loads(parallel.stdout), json.loads(sequential.stdout)
    assert [l["table"] for l in p["layers"]] == [l["table"] for l in s["layers"]]  # run order in both
    for a, b in zip(p["layers"], s["layers"]):
        assert (a["status"], a["rows_in"], a["rows_out"], a["version"]) == (b["status"], b["rows_in"], b["rows_out"], b["version"])
    for table in ("bronze_events", "silver_events", "silver_events__quarantine", "gold_daily_sales", "gold_other"):
        assert contents(project, table).equals(contents(twin, table)), table
    assert contents(project, "gold_other").equals(contents(project, "gold_daily_sales"))


def test_threads_1_runs_one_table_after_another_in_run_order(project):
    add_gold2(project)
    r = medallion("run", "all", "-C", project, "--threads", "1")
    assert r.exit_code == 0, r
    narration = r.stderr.split("\n\n")[0]  # before the summary table
    lines = [line.split() for line in narration.splitlines() if line.split()[:1] in (["run"], ["written"], ["unchanged"])]
    # each table starts after the previous one finished, in run order
    assert [(l[0], l[1].rstrip(":")) for l in lines] == [
        ("run", "bronze"), ("written", "bronze"), ("run", "silver"), ("written", "silver"),
        ("run", "gold"), ("written", "gold"), ("run", "gold2"), ("written", "gold2"),
    ]


def test_a_failed_branch_does_not_stop_an_independent_one(project):
    add_gold2(project, fail=True)
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert "Traceback" not in r.stderr
    assert exists(project, "gold_daily_sales") and not exists(project, "gold_other")
    assert DeltaTable(str(project / "lake" / "gold_daily_sales")).version() == 0
    # the summary says which failed, the error line why
    assert "failed (3 succeeded, 1 failed, 0 skipped)" in r.stderr, r
    row = next(line for line in r.stderr.splitlines() if line.startswith("gold2 "))
    assert row.split()[:4] == ["gold2", "gold_other", "overwrite", "failed"] and "boom in gold2" in row
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [
        "error: layer 'gold2' failed: ValueError: boom in gold2"]
    assert r.stdout == ""

    j = medallion("run", "all", "-C", project, "--json")  # the same in JSON (gold is now unchanged)
    assert j.exit_code == ExitCode.RUN_FAILED, j
    doc = json.loads(j.stdout)
    assert doc["status"] == "failed" and doc["failed"] == ["gold_other"] and doc["skipped"] == []
    assert doc["succeeded"] == ["bronze_events", "silver_events", "gold_daily_sales"]
    assert doc["error"]["exit_code"] == 1 and "boom in gold2" in doc["error"]["message"]


def test_a_failed_table_skips_everything_downstream(project):
    add_gold2(project)
    fail_pipeline(project, "silver")
    r = medallion("run", "all", "-C", project, "--json")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    doc = json.loads(r.stdout)
    layers = by_table(doc)
    assert [(t, l["status"]) for t, l in layers.items()] == [
        ("bronze_events", "written"), ("silver_events", "failed"), ("gold_daily_sales", "skipped"), ("gold_other", "skipped")]
    assert layers["gold_daily_sales"]["error"] == "upstream silver_events failed"
    assert layers["gold_other"]["error"] == "upstream silver_events failed"
    assert doc["skipped"] == ["gold_daily_sales", "gold_other"] and doc["failed"] == ["silver_events"]
    assert not any(exists(project, t) for t in ("silver_events", "gold_daily_sales", "gold_other"))
    assert exists(project, "bronze_events")
    # text: one line per skipped table as it is decided, and the summary
    t = medallion("run", "all", "-C", project)
    assert t.exit_code == ExitCode.RUN_FAILED, t
    assert "skipped gold: upstream silver_events failed" in " ".join(t.stderr.split())
    assert "failed (1 succeeded, 1 failed, 2 skipped)" in t.stderr, t


def test_fail_fast_starts_no_table_after_the_first_failure(project, tmp_path):
    add_gold2(project)
    fail_pipeline(project, "gold")  # run order: bronze, silver, gold, gold2
    twin = tmp_path / "twin"
    shutil.copytree(project, twin)

    r = medallion("run", "all", "-C", project, "--threads", "1", "--fail-fast", "--json")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    layers = by_table(json.loads(r.stdout))
    assert layers["gold_daily_sales"]["status"] == "failed"
    assert layers["gold_other"]["status"] == "skipped"
    assert layers["gold_other"]["error"] == "not started: gold_daily_sales failed and --fail-fast stops the run"
    assert not exists(project, "gold_other")

    # without --fail-fast the independent gold2 still runs
    r = medallion("run", "all", "-C", twin, "--threads", "1", "--json")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert by_table(json.loads(r.stdout))["gold_other"]["status"] == "written"
    assert exists(twin, "gold_other")


def test_exit_code_is_the_first_failure_in_run_order(project):
    """gold and gold2 both fail: the error (and exit code) is gold's, the first in run order
    whichever finished first, and it names the other."""
    add_gold2(project, fail=True)
    fail_pipeline(project, "gold")
    r = medallion("run", "all", "-C", project, "--threads", "2")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: layer 'gold' failed: ValueError: boom in gold (also failed: gold_other)"], r
    assert "failed (2 succeeded, 2 failed, 0 skipped)" in r.stderr


def test_threads_must_be_positive(project):
    r = medallion("run", "all", "-C", project, "--threads", "0")
    assert r.exit_code == ExitCode.USAGE, r
    assert "'--threads'" in r.stderr and "greater than or equal to 1" in r.stderr, r
    assert not exists(project, "bronze_events")
    from medallion_cli.errors import UsageError
    from medallion_cli.runner import RunOptions

    with pytest.raises(UsageError, match="--threads must be at least 1"):
        RunOptions(threads=0)


# -- the scheduler alone (no tables): ordering, skipping, --fail-fast with several threads ---

def test_scheduler_fail_fast_with_threads_lets_running_tasks_finish():
    from medallion_cli.scheduler import run_graph

    b_running = threading.Event()
    release = threading.Event()
    done_order: list[str] = []

    def work(name: str) -> str:
        if name == "b":
            b_running.set()
            assert release.wait(10)
            return "b done"
        if name == "a":
            assert b_running.wait(10)  # fail while b runs
            raise PipelineError("a broke")
        return f"{name} done"

    def on_done(outcome) -> None:
        done_order.append(outcome.name)
        if outcome.name == "a":
            release.set()

    # a and b are independent; c needs nothing but cannot start (2 threads busy); d needs b
    out = run_graph(["a", "b", "c", "d"], {"d": ["b"]}, work, threads=2, fail_fast=True,
                    failure=PipelineError, on_done=on_done)
    status = {o.name: (o.status, o.blocked_by, o.fail_fast) for o in out}
    assert status["a"][0] == "failed"
    assert status["b"] == ("done", (), False)  # was running: it finished
    assert status["c"] == ("skipped", ("a",), True)
    assert status["d"] == ("skipped", ("a",), True)
    assert [o.name for o in out] == ["a", "b", "c", "d"]  # outcomes in the given order


def test_scheduler_skips_only_descendants_and_names_the_failed_root():
    from medallion_cli.scheduler import run_graph

    calls: list[str] = []

    def work(name: str) -> str:
        calls.append(name)
        if name == "s1":
            raise PipelineError("no")
        return name

    parents = {"s1": ["b"], "s2": ["b"], "g1": ["s1"], "g2": ["g1", "s2"], "g3": ["s2"]}
    for threads in (1, 3):
        calls.clear()
        out = {o.name: o for o in run_graph(["b", "s1", "s2", "g1", "g2", "g3"], parents, work, threads=threads,
                                            failure=PipelineError)}
        assert sorted(calls) == ["b", "g3", "s1", "s2"]
        assert out["g1"].status == out["g2"].status == "skipped"
        assert out["g2"].blocked_by == ("s1",)  # through the skipped g1
        assert out["g3"].status == "done"


def test_scheduler_raises_a_bug_after_running_tasks_finish():
    """An exception that is not a task failure (a bug) starts nothing more, waits for the
    running tasks, then is raised."""
    from medallion_cli.scheduler import run_graph

    calls: list[str] = []
    slow_done = threading.Event()

    def work(name: str) -> str:
        calls.append(name)
        if name == "bug":
            raise KeyError("not a task failure")
        if name == "slow":
            threading.Event().wait(0.3)
            slow_done.set()
        return name

    with pytest.raises(KeyError):
        run_graph(["slow", "bug", "later"], {}, work, threads=2, failure=PipelineError)
    assert slow_done.is_set()
    assert "later" not in calls


def test_state_store_of_a_run_takes_turns_across_threads(tmp_path):
    """DuckDB refuses two threads creating the state file's schema at once (catalog
    write-write conflict); the store a run uses serializes its connections."""
    from medallion_cli.runner import _SerializedStateStore

    store = _SerializedStateStore(tmp_path / "state.duckdb")
    errors: list[str] = []

    def work(i: int) -> None:
        try:
            for n in range(5):
                with store.connect() as con:
                    store.record(con, table=f"t{i}", column="c", value=str(n), value_int=n, delta_version=n,
                                 run_id="r", action="advance")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {(w.table, w.value) for w in store.watermarks()} == {(f"t{i}", "4") for i in range(4)}
