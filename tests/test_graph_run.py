"""Running a graph of tables: independent tables at the same time (--threads), a failure
skips only what is downstream of it, --fail-fast, the summary of succeeded/failed/skipped."""

from __future__ import annotations

import json
import shutil
import threading

import polars as pl
import pytest
from deltalake import DeltaTable

from conftest import add_landing_file, medallion
from medallion_cli.errors import ExitCode, PipelineError

# Columns that differ between two runs by design (times and run ids).
VOLATILE = ("_ingested_at", "_run_id", "_quarantined_at")


# Where each template pipeline's output node starts returning: code inserted before it runs
# inside the table's DAG.
MARKERS = {
    "bronze_events": "    return landing.with_columns", "bronze_customers": "    return landing.with_columns",
    "silver_events": "    return normalized_events.select", "silver_customers": "    return bronze_customers.with_columns",
    "gold_daily_sales": "    return daily_sales.sort", "gold_sales_by_segment": "    segments = silver_customers.select",
}
ALL = ["bronze_customers", "bronze_events", "silver_customers", "silver_events", "gold_daily_sales",
       "gold_sales_by_segment"]  # run order


def insert(project, name: str, code: str) -> None:
    module = project / "pipelines" / f"{name}.py"
    text = module.read_text()
    assert MARKERS[name] in text
    module.write_text(text.replace(MARKERS[name], code + MARKERS[name], 1))


def fail_pipeline(project, name: str) -> None:
    """Make pipeline ``name`` raise ``ValueError("boom in NAME")`` in its output node."""
    insert(project, name, f'    raise ValueError("boom in {name}")\n')


def exists(project, table: str) -> bool:
    return DeltaTable.is_deltatable(str(project / "lake" / table))


def contents(project, table: str) -> pl.DataFrame:
    df = pl.read_delta(str(project / "lake" / table))
    df = df.drop([c for c in df.columns if c in VOLATILE])
    return df.sort(df.columns)


def by_table(doc: dict) -> dict[str, dict]:
    return {layer["table"]: layer for layer in doc["layers"]}


def test_independent_tables_run_at_the_same_time(project, tmp_path):
    """The two gold tables each wait (up to 20 s) for the other to have started: with two
    threads both see the other, so they really ran concurrently."""
    pair = ("gold_daily_sales", "gold_sales_by_segment")
    for name in pair:
        other = pair[1] if name == pair[0] else pair[0]
        insert(project, name, (
            f"    import pathlib, time\n"
            f"    pathlib.Path({str(tmp_path / name)!r}).touch()\n"
            f"    deadline = time.monotonic() + 20\n"
            f"    while not pathlib.Path({str(tmp_path / other)!r}).exists() and time.monotonic() < deadline:\n"
            f"        time.sleep(0.02)\n"
            f"    pathlib.Path({str(tmp_path / (name + '.saw'))!r}).write_text(str(pathlib.Path({str(tmp_path / other)!r}).exists()))\n"))
    r = medallion("run", "all", "-C", project, "--threads", "2", "--json")
    assert r.exit_code == 0, r
    assert all((tmp_path / f"{name}.saw").read_text() == "True" for name in pair)
    doc = json.loads(r.stdout)
    assert doc["status"] == "succeeded" and doc["failed"] == [] and doc["skipped"] == []
    assert doc["succeeded"] == ALL
    # Every commit and every watermark landed (the state file is shared by the threads).
    assert all(DeltaTable(str(project / "lake" / table)).version() == 0 for table in ALL)
    marks = {w["table"] for w in json.loads(medallion("watermark", "show", "-C", project, "--json").stdout)["watermarks"]}
    assert set(ALL) <= marks


def test_parallel_run_gives_what_a_sequential_run_gives(project, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(project, twin)
    parallel = medallion("run", "all", "-C", project, "--threads", "4", "--json")
    sequential = medallion("run", "all", "-C", twin, "--threads", "1", "--json")
    assert parallel.exit_code == 0, parallel
    assert sequential.exit_code == 0, sequential
    p, s = json.loads(parallel.stdout), json.loads(sequential.stdout)
    assert [l["table"] for l in p["layers"]] == [l["table"] for l in s["layers"]] == ALL  # run order in both
    for a, b in zip(p["layers"], s["layers"]):
        assert (a["status"], a["rows_in"], a["rows_out"], a["version"]) == (b["status"], b["rows_in"], b["rows_out"], b["version"])
    for table in [*ALL, "silver_events__quarantine", "silver_customers__quarantine"]:
        assert contents(project, table).equals(contents(twin, table)), table


def test_threads_1_runs_one_table_after_another_in_run_order(project):
    r = medallion("run", "all", "-C", project, "--threads", "1")
    assert r.exit_code == 0, r
    narration = r.stderr.split("\n\n")[0]  # before the summary table
    lines = [line.split() for line in narration.splitlines() if line.split()[:1] in (["run"], ["written"], ["unchanged"])]
    # each table starts after the previous one finished, in run order
    assert [(l[0], l[1].rstrip(":")) for l in lines] == [(verb, table) for table in ALL for verb in ("run", "written")]


def test_a_failed_branch_does_not_stop_an_independent_one(project):
    fail_pipeline(project, "silver_customers")
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert "Traceback" not in r.stderr
    # the events branch committed; the customers branch stopped at the failure, the join was skipped
    assert all(DeltaTable(str(project / "lake" / t)).version() == 0
               for t in ("bronze_customers", "bronze_events", "silver_events", "gold_daily_sales"))
    assert not exists(project, "silver_customers") and not exists(project, "gold_sales_by_segment")
    # the summary says which failed, the error line why
    assert "failed (4 succeeded, 1 failed, 1 skipped)" in r.stderr, r
    row = next(line for line in r.stderr.splitlines() if line.startswith("silver_customers "))
    assert row.split()[:3] == ["silver_customers", "merge", "failed"] and "boom in silver_customers" in row
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [
        "error: layer 'silver_customers' failed: ValueError: boom in silver_customers"]
    assert r.stdout == ""

    j = medallion("run", "all", "-C", project, "--json")  # the same in JSON (the events branch is now unchanged)
    assert j.exit_code == ExitCode.RUN_FAILED, j
    doc = json.loads(j.stdout)
    assert doc["status"] == "failed" and doc["failed"] == ["silver_customers"]
    assert doc["skipped"] == ["gold_sales_by_segment"]
    assert doc["succeeded"] == ["bronze_customers", "bronze_events", "silver_events", "gold_daily_sales"]
    assert by_table(doc)["gold_daily_sales"]["status"] == "unchanged"
    assert doc["error"]["exit_code"] == 1 and "boom in silver_customers" in doc["error"]["message"]


def test_a_failed_table_skips_everything_downstream(project):
    fail_pipeline(project, "silver_events")
    r = medallion("run", "all", "-C", project, "--json")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    doc = json.loads(r.stdout)
    layers = by_table(doc)
    assert [(t, l["status"]) for t, l in layers.items()] == [
        ("bronze_customers", "written"), ("bronze_events", "written"), ("silver_customers", "written"),
        ("silver_events", "failed"), ("gold_daily_sales", "skipped"), ("gold_sales_by_segment", "skipped")]
    assert layers["gold_daily_sales"]["error"] == "upstream silver_events failed"
    assert layers["gold_sales_by_segment"]["error"] == "upstream silver_events failed"
    assert doc["skipped"] == ["gold_daily_sales", "gold_sales_by_segment"] and doc["failed"] == ["silver_events"]
    assert not any(exists(project, t) for t in ("silver_events", "gold_daily_sales", "gold_sales_by_segment"))
    assert exists(project, "bronze_events") and exists(project, "silver_customers")
    # text: one line per skipped table as it is decided, and the summary
    t = medallion("run", "all", "-C", project)
    assert t.exit_code == ExitCode.RUN_FAILED, t
    assert "skipped gold_daily_sales: upstream silver_events failed" in " ".join(t.stderr.split())
    assert "failed (3 succeeded, 1 failed, 2 skipped)" in t.stderr, t


def test_fail_fast_starts_no_table_after_the_first_failure(project, tmp_path):
    fail_pipeline(project, "bronze_customers")  # run order: bronze_customers first, bronze_events next
    twin = tmp_path / "twin"
    shutil.copytree(project, twin)

    r = medallion("run", "all", "-C", project, "--threads", "1", "--fail-fast", "--json")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    layers = by_table(json.loads(r.stdout))
    assert layers["bronze_customers"]["status"] == "failed"
    assert layers["bronze_events"]["status"] == "skipped"
    assert layers["bronze_events"]["error"] == "not started: bronze_customers failed and --fail-fast stops the run"
    assert not exists(project, "bronze_events")

    # without --fail-fast the independent events branch still runs
    r = medallion("run", "all", "-C", twin, "--threads", "1", "--json")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert [by_table(json.loads(r.stdout))[t]["status"] for t in ("bronze_events", "silver_events", "gold_daily_sales")] \
        == ["written"] * 3
    assert exists(twin, "gold_daily_sales")


def test_exit_code_is_the_first_failure_in_run_order(project):
    """Both gold tables fail: the error (and exit code) is gold_daily_sales's, the first in run
    order whichever finished first, and it names the other."""
    fail_pipeline(project, "gold_sales_by_segment")
    fail_pipeline(project, "gold_daily_sales")
    r = medallion("run", "all", "-C", project, "--threads", "2")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: layer 'gold_daily_sales' failed: ValueError: boom in gold_daily_sales "
                      "(also failed: gold_sales_by_segment)"], r
    assert "failed (4 succeeded, 2 failed, 0 skipped)" in r.stderr


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


def test_a_run_opens_the_state_file_once_when_nothing_is_new(ran_project, monkeypatch):
    """Opening the state file costs 15-20 ms: a run keeps one connection between uses
    (about 30 reads and writes over six tables) instead of opening it for each."""
    import duckdb

    opened: list[str] = []
    real = duckdb.connect
    monkeypatch.setattr(duckdb, "connect", lambda *a, **k: opened.append(str(a[0]) if a else "") or real(*a, **k))
    r = medallion("run", "all", "-C", ran_project, "--json", "-q")
    assert r.exit_code == 0, r
    assert [t["status"] for t in json.loads(r.stdout)["layers"]] == ["unchanged"] * 6
    assert opened == [str(ran_project / ".medallion" / "state.duckdb")]


def test_the_state_file_is_free_while_a_table_computes(ran_project, monkeypatch):
    """Another process cannot open the state file while a run holds its connection: the
    run closes it while a table runs its DAG (and writes), and at the end of the run."""
    from medallion_cli import runner

    stores: list[runner._SerializedStateStore] = []
    held_during_dag: list[bool] = []

    class Recorded(runner._SerializedStateStore):
        def __init__(self, path):
            super().__init__(path)
            stores.append(self)

    real = runner.run_dag

    def spy(*a, **k):
        with runner._STATE_LOCK:  # between two state blocks of any thread
            held_during_dag.append(stores[-1]._con is not None)
        return real(*a, **k)

    monkeypatch.setattr(runner, "_SerializedStateStore", Recorded)
    monkeypatch.setattr(runner, "run_dag", spy)
    add_landing_file(ran_project, "late.csv")
    r = medallion("run", "all", "-C", ran_project, "-q")
    assert r.exit_code == 0, r
    assert held_during_dag and not any(held_during_dag)
    assert len(stores) == 1 and stores[0]._con is None


def test_a_table_failing_in_its_dag_comes_back_to_the_state_file(project, monkeypatch):
    """A table that fails while away (its DAG raised) is counted back: the run's connection
    is kept between uses again (here the last table fails, so nothing else resets it)."""
    from medallion_cli import runner

    stores: list[runner._SerializedStateStore] = []

    class Recorded(runner._SerializedStateStore):
        def __init__(self, path):
            super().__init__(path)
            stores.append(self)

    monkeypatch.setattr(runner, "_SerializedStateStore", Recorded)
    fail_pipeline(project, "gold_sales_by_segment")
    r = medallion("run", "all", "-C", project, "-q", "--threads", "1")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert len(stores) == 1 and stores[0]._away == 0 and stores[0]._con is None
