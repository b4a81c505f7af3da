"""Benchmark tickerq against APScheduler 3 and write bench/results.{md,json}.

``python bench/run.py`` (what ``make bench`` runs) measures, each in a fresh
subprocess (see ``bench/workers.py``):

1. drain: N no-op async jobs already due, jobs/s from engine start until every
   result is written;
2. enqueue: N jobs added one call at a time, jobs/s;
3. lateness: jobs due spread over a few seconds, how late each one starts;
4. the peak RSS of every subprocess;

then profiles tickerq's drain under cProfile (``bench/profile.txt``) and writes
the tables, the ratios tickerq/APScheduler and the issue targets.

``python bench/run.py --profile`` runs only the profile and refreshes its
section of the results. ``--quick`` is a smoke test with small numbers.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKER = HERE / "workers.py"
RESULTS_MD = HERE / "results.md"
RESULTS_JSON = HERE / "results.json"
PROFILE_TXT = HERE / "profile.txt"
WORKER_TIMEOUT = 240.0

Record = dict[str, Any]

IMPL_LABELS = {
    "tickerq": "tickerq",
    "aps-async": "APScheduler 3, AsyncIOExecutor (async job)",
    "aps-pool": "APScheduler 3, 10-thread pool (sync job)",
}


@dataclass(frozen=True)
class Case:
    """One measurement: an implementation on a workload."""

    key: str
    impl: str
    workload: str
    n: int
    concurrency: int = 16
    label: str = ""

    def argv(self, args: argparse.Namespace) -> list[str]:
        argv = [sys.executable, str(WORKER), self.impl, self.workload, "--n", str(self.n)]
        argv += ["--concurrency", str(self.concurrency)]
        if self.workload == "lateness":
            argv += ["--spread", str(args.lateness_spread), "--lead", str(args.lateness_lead)]
        return argv

    @property
    def title(self) -> str:
        if self.label:
            return self.label
        if self.impl == "tickerq":
            return f"tickerq (max_concurrency={self.concurrency})"
        return IMPL_LABELS[self.impl]


def cases(args: argparse.Namespace) -> list[Case]:
    dn, en, ln, sn = args.drain_n, args.enqueue_n, args.lateness_n, args.drain_small_n
    small = [
        Case(f"drain-small/{impl}", impl, "drain", sn, 16)
        for impl in ("tickerq", "aps-async", "aps-pool")
        if sn > 0
    ]
    return [
        Case("drain/tickerq", "tickerq", "drain", dn, 16),
        Case("drain/tickerq-c10", "tickerq", "drain", dn, 10),
        Case("drain/aps-async", "aps-async", "drain", dn),
        Case("drain/aps-pool", "aps-pool", "drain", dn),
        *small,
        Case("enqueue/tickerq", "tickerq", "enqueue", en, label="tickerq `enqueue()` (due now)"),
        Case(
            "enqueue/tickerq-future",
            "tickerq",
            "enqueue-future",
            en,
            label="tickerq `schedule(at=now+1h)`",
        ),
        Case("enqueue/aps-async", "aps-async", "enqueue", en),
        Case("enqueue/aps-pool", "aps-pool", "enqueue", en),
        Case("lateness/tickerq", "tickerq", "lateness", ln, 16),
        Case("lateness/aps-async", "aps-async", "lateness", ln),
        Case("lateness/aps-pool", "aps-pool", "lateness", ln),
    ]


# -- running -------------------------------------------------------------------------


def run_worker(argv: Sequence[str]) -> Record:
    """Run one measurement in a fresh interpreter; fail loudly if it fails."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=WORKER_TIMEOUT, env=env, check=False
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"benchmark worker failed ({proc.returncode}): {' '.join(argv[1:])}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    record: Record = json.loads(lines[-1])
    return record


def summarize(case: Case, runs: list[Record]) -> Record:
    """Median of the repeated runs (lateness: the run with the median p99)."""
    out: Record = {
        "key": case.key,
        "title": case.title,
        "impl": case.impl,
        "workload": case.workload,
        "n": case.n,
        "concurrency": case.concurrency if case.impl == "tickerq" else None,
        "repeats": len(runs),
        "runs": runs,
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
    }
    if case.workload == "lateness":
        middle = sorted(runs, key=lambda r: r["p99_ms"])[(len(runs) - 1) // 2]
        for name in ("p50_ms", "p99_ms", "max_ms", "mean_ms", "count"):
            out[name] = middle[name]
    else:
        rates = [r["rate"] for r in runs]
        out["rate"] = statistics.median(rates)
        out["rate_min"] = min(rates)
        out["rate_max"] = max(rates)
    return out


def run_cases(args: argparse.Namespace) -> dict[str, Record]:
    results: dict[str, Record] = {}
    for case in cases(args):
        repeats = args.lateness_repeat if case.workload == "lateness" else args.repeat
        runs = []
        for i in range(repeats):
            started = time.perf_counter()
            runs.append(run_worker(case.argv(args)))
            took = time.perf_counter() - started
            print(f"  {case.key:<24} run {i + 1}/{repeats}  ({took:.1f} s)", file=sys.stderr)
        results[case.key] = summarize(case, runs)
    return results


# -- the profile ---------------------------------------------------------------------

LOOP = "asyncio: task creation, scheduling, event loop"
DISPATCH = "engine dispatch (_main, _dispatch, slots)"
RUN = "engine run wrapper (_execute, _call) + job body"
STORE = "store claim / complete"
CONTEXT = "context creation (TickerContext)"
BOOKKEEPING = "status bookkeeping (Outcome, Attempt records, _record)"
OTHER = "other"
BUCKETS = (LOOP, DISPATCH, RUN, STORE, CONTEXT, BOOKKEEPING, OTHER)

FuncKey = tuple[str, int, str]


def _direct_bucket(key: FuncKey) -> str | None:
    """The bucket a function belongs to by where it is, or None to follow its callers."""
    path, _, name = key
    path = path.replace("\\", "/")
    if "/tickerq/context.py" in path:
        return CONTEXT
    if "/tickerq/stores/" in path:
        return STORE
    if "/tickerq/models.py" in path:
        return BOOKKEEPING
    if "/tickerq/engine.py" in path:
        if name in ("_record", "_conclude", "_flush", "_flush_soon"):
            return BOOKKEEPING
        if name in ("_execute", "_call", "_in_thread"):
            return RUN
        return DISPATCH
    if path.endswith("bench/workers.py"):
        return RUN
    if "/asyncio/" in path or path.endswith(("/selectors.py", "/_weakrefset.py")):
        return LOOP
    if path == "<string>" and name == "__init__":
        return BOOKKEEPING  # dataclass-generated __init__: Attempt and Outcome records
    return None  # builtins, stdlib helpers, tickerq.clock: charged to their callers


def _caller_weights(callers: dict[FuncKey, tuple[Any, ...]]) -> dict[FuncKey, float]:
    """How much of a callee's own time each caller accounts for (by call count if all 0)."""
    weights = {c: float(edge[2]) for c, edge in callers.items() if edge[2] > 0}
    if not weights:
        weights = {c: float(edge[0]) for c, edge in callers.items() if edge[0] > 0}
    total = sum(weights.values())
    return {c: w / total for c, w in weights.items()}


def bucket_times(stats: dict[FuncKey, Any]) -> dict[str, float]:
    """Split every function's own time (tottime) into buckets.

    A function with no bucket of its own (a builtin, ``uuid.__hash__``,
    ``dataclasses.replace``...) is charged to its callers in proportion to
    the time it spent for each of them, recursively.
    """
    memo: dict[FuncKey, dict[str, float]] = {}

    def share(key: FuncKey, visiting: frozenset[FuncKey]) -> dict[str, float]:
        if key in memo:
            return memo[key]
        direct = _direct_bucket(key)
        weights: dict[FuncKey, float] = {}
        if direct is None and key not in visiting and key in stats:
            weights = _caller_weights(stats[key][4])
        result: dict[str, float] = defaultdict(float)
        if direct is not None:
            result[direct] = 1.0
        elif not weights:
            result[OTHER] = 1.0
        for caller, weight in weights.items():
            for bucket, part in share(caller, visiting | {key}).items():
                result[bucket] += part * weight
        if not visiting:
            memo[key] = dict(result)
        return result

    totals = dict.fromkeys(BUCKETS, 0.0)
    for key, entry in stats.items():
        for bucket, part in share(key, frozenset()).items():
            totals[bucket] += entry[2] * part
    return totals


def short_name(key: FuncKey) -> str:
    """``dir/file.py:line(name)`` with only the last directory kept."""
    path, line, name = key
    if path == "~":
        return name
    parts = Path(path).parts
    return f"{'/'.join(parts[-2:])}:{line}({name})"


def run_profile(args: argparse.Namespace, command: str) -> Record:
    """Profile tickerq's drain in a subprocess; write profile.txt; return the buckets."""
    n = args.profile_n
    with tempfile.TemporaryDirectory() as tmp:
        prof_path = Path(tmp) / "drain.prof"
        argv = [sys.executable, str(WORKER), "tickerq", "drain", "--n", str(n)]
        argv += ["--profile", str(prof_path)]
        started = time.perf_counter()
        record = run_worker(argv)
        print(
            f"  {'profile/tickerq-drain':<24} ({time.perf_counter() - started:.1f} s)",
            file=sys.stderr,
        )
        stats = pstats.Stats(str(prof_path))
        raw: dict[FuncKey, Any] = stats.stats  # type: ignore[attr-defined]
        buckets = bucket_times(raw)
        total_tt = sum(entry[2] for entry in raw.values())
        top = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:25]
        top_rows = [
            {
                "function": short_name(key),
                "ncalls": entry[1],
                "tottime_s": entry[2],
                "cumtime_s": entry[3],
                "us_per_job": entry[2] / n * 1e6,
            }
            for key, entry in top
        ]
        text = io.StringIO()
        text.write(
            f"tickerq drain of {n:,} no-op async jobs (max_concurrency=16) under cProfile,\n"
            "engine start to idle only (enqueueing not profiled).\n"
            f"Written by: {command}   ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)\n"
            f"Profiled wall time {record['seconds']:.3f} s = "
            f"{record['seconds'] / n * 1e6:.1f} us/job (cProfile inflates this).\n\n"
        )
        printer = pstats.Stats(str(prof_path), stream=text)
        printer.strip_dirs().sort_stats("tottime").print_stats(25)
    PROFILE_TXT.write_text(text.getvalue())
    return {
        "n": n,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "profiled_seconds": record["seconds"],
        "profiled_us_per_job": record["seconds"] / n * 1e6,
        "total_tottime_s": total_tt,
        "buckets_us_per_job": {b: t / n * 1e6 for b, t in buckets.items()},
        "top": top_rows,
    }


# -- machine -------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version_of(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> Record:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "tickerq": version_of("tickerq"),
        "apscheduler": version_of("apscheduler"),
    }


# -- ratios and targets ----------------------------------------------------------------


def _ratio(results: dict[str, Record], num: str, den: str, field: str) -> float | None:
    a, b = results.get(num), results.get(den)
    if a is None or b is None or not b.get(field):
        return None
    return float(a[field]) / float(b[field])


RATIOS = (
    ("drain, tickerq (16) / APScheduler async", "drain/tickerq", "drain/aps-async", "rate"),
    ("drain, tickerq (16) / APScheduler pool", "drain/tickerq", "drain/aps-pool", "rate"),
    ("drain, tickerq (10) / APScheduler async", "drain/tickerq-c10", "drain/aps-async", "rate"),
    ("drain, tickerq (10) / APScheduler pool", "drain/tickerq-c10", "drain/aps-pool", "rate"),
    (
        "drain small N, tickerq (16) / APScheduler async",
        "drain-small/tickerq",
        "drain-small/aps-async",
        "rate",
    ),
    (
        "drain small N, tickerq (16) / APScheduler pool",
        "drain-small/tickerq",
        "drain-small/aps-pool",
        "rate",
    ),
    ("enqueue, tickerq / APScheduler async", "enqueue/tickerq", "enqueue/aps-async", "rate"),
    ("enqueue, tickerq / APScheduler pool", "enqueue/tickerq", "enqueue/aps-pool", "rate"),
    (
        "enqueue +1h, tickerq / APScheduler async",
        "enqueue/tickerq-future",
        "enqueue/aps-async",
        "rate",
    ),
    (
        "lateness p99, tickerq / APScheduler async",
        "lateness/tickerq",
        "lateness/aps-async",
        "p99_ms",
    ),
    ("lateness p99, tickerq / APScheduler pool", "lateness/tickerq", "lateness/aps-pool", "p99_ms"),
    (
        "peak RSS drain, tickerq (16) / APScheduler async",
        "drain/tickerq",
        "drain/aps-async",
        "peak_rss_mb",
    ),
    (
        "peak RSS drain, tickerq (16) / APScheduler pool",
        "drain/tickerq",
        "drain/aps-pool",
        "peak_rss_mb",
    ),
)


def ratios(results: dict[str, Record]) -> list[Record]:
    return [
        {"name": name, "num": num, "den": den, "field": field, "ratio": r}
        for name, num, den, field in RATIOS
        if (r := _ratio(results, num, den, field)) is not None
    ]


def targets(results: dict[str, Record]) -> list[Record]:
    out: list[Record] = []

    def ratio_target(name: str, num: str, den: str, minimum: float) -> None:
        r = _ratio(results, num, den, "rate")
        if r is not None:
            out.append(
                {"target": name, "measured": f"{r:.2f}x", "value": r, "passed": r >= minimum}
            )

    ratio_target("drain >= 1.5x APScheduler 3 (async job)", "drain/tickerq", "drain/aps-async", 1.5)
    ratio_target(
        "drain >= 1.5x APScheduler 3 (10-thread pool)", "drain/tickerq", "drain/aps-pool", 1.5
    )
    ratio_target(
        "enqueue >= APScheduler 3 (async setup)", "enqueue/tickerq", "enqueue/aps-async", 1.0
    )
    ratio_target(
        "enqueue >= APScheduler 3 (10-thread pool)", "enqueue/tickerq", "enqueue/aps-pool", 1.0
    )
    late = results.get("lateness/tickerq")
    if late is not None:
        p99 = float(late["p99_ms"])
        out.append(
            {
                "target": "lateness p99 <= 2 ms",
                "measured": f"{p99:.2f} ms",
                "value": p99,
                "passed": p99 <= 2.0,
            }
        )
    return out


# -- rendering -------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_results(data: Record) -> str:
    results: dict[str, Record] = data["results"]
    cfg = data["config"]
    parts: list[str] = []

    def section(prefix: str, title: str) -> None:
        rows = []
        for key, rec in results.items():
            if key.split("/")[0] != prefix:
                continue
            spread = f"{rec['rate_min']:,.0f} – {rec['rate_max']:,.0f}"
            rows.append([rec["title"], f"{rec['rate']:,.0f}", spread, f"{rec['peak_rss_mb']:.0f}"])
        if rows:
            parts.append(f"### {title}\n")
            parts.append(
                _table(
                    ["implementation", "jobs/s (median)", "min – max", "peak RSS MB"],
                    rows,
                    [False, True, True, True],
                )
                + "\n"
            )

    section("drain", f"Drain: {cfg['drain_n']:,} no-op jobs already due")
    section("drain-small", f"Drain at a smaller N: {cfg['drain_small_n']:,} jobs")
    section("enqueue", f"Enqueue: {cfg['enqueue_n']:,} jobs, one call at a time")
    late_rows = [
        [
            rec["title"],
            f"{rec['p50_ms']:.2f}",
            f"{rec['p99_ms']:.2f}",
            f"{rec['max_ms']:.2f}",
            f"{rec['peak_rss_mb']:.0f}",
        ]
        for rec in results.values()
        if rec["workload"] == "lateness"
    ]
    if late_rows:
        parts.append(
            f"### Lateness: {cfg['lateness_n']:,} jobs due over {cfg['lateness_spread']:g} s\n"
        )
        parts.append(
            _table(
                ["implementation", "p50 ms", "p99 ms", "max ms", "peak RSS MB"],
                late_rows,
                [False, True, True, True, True],
            )
            + "\n"
        )
    ratio_rows = [[r["name"], f"{r['ratio']:.2f}"] for r in data["ratios"]]
    if ratio_rows:
        parts.append("### Ratios tickerq / APScheduler 3\n")
        parts.append(
            "Throughput: higher is better for tickerq; lateness and RSS: lower is better.\n"
        )
        parts.append(_table(["comparison", "ratio"], ratio_rows, [False, True]) + "\n")
    target_rows = [
        [t["target"], t["measured"], "PASS" if t["passed"] else "FAIL"] for t in data["targets"]
    ]
    if target_rows:
        parts.append("### Issue targets\n")
        parts.append(
            _table(["target", "measured", "result"], target_rows, [False, True, False]) + "\n"
        )
        parts.append(small_n_note(results, cfg))
    return "\n".join(parts)


def small_n_note(results: dict[str, Record], cfg: Record) -> str:
    """Say how the drain target fares at the smaller N (informational)."""
    parts = []
    for impl, name in (("aps-async", "AsyncIOExecutor"), ("aps-pool", "10-thread pool")):
        r = _ratio(results, "drain-small/tickerq", f"drain-small/{impl}", "rate")
        if r is not None:
            verdict = "meets" if r >= 1.5 else "misses"
            parts.append(f"{r:.2f}x vs the {name} setup ({verdict} 1.5x)")
    if not parts:
        return ""
    return (
        f"Informational, not an issue target: at N={cfg['drain_small_n']:,} the drain ratio "
        "is " + " and ".join(parts) + ".\n"
    )


def render_profile(profile: Record | None, drain: Record | None) -> str:
    if not profile:
        return "## Where the time per job goes\n\nNo profile in this run (`--no-profile`).\n"
    buckets: dict[str, float] = profile["buckets_us_per_job"]
    total = sum(buckets.values())
    unprofiled = 1e6 / drain["rate"] if drain else None
    header = ["bucket", "µs/job under cProfile", "share"]
    if unprofiled is not None:
        header.append("≈ µs/job without profiler")
    rows = []
    for name in BUCKETS:
        us = buckets.get(name, 0.0)
        share = us / total if total else 0.0
        row = [name, f"{us:.2f}", f"{share:.0%}"]
        if unprofiled is not None:
            row.append(f"{share * unprofiled:.2f}")
        rows.append(row)
    total_row = ["**total (sum of tottime)**", f"**{total:.2f}**", "100%"]
    if unprofiled is not None:
        total_row.append(f"**{unprofiled:.2f}**")
    rows.append(total_row)
    top_rows = [
        [f"`{t['function']}`", f"{t['ncalls']:,}", f"{t['us_per_job']:.2f}"]
        for t in profile["top"][:8]
    ]
    unprofiled_note = (
        f" The last column spreads the unprofiled drain cost ({unprofiled:.2f} µs/job, "
        "the tickerq max_concurrency=16 drain above) by the profiled shares; cProfile "
        "charges a fixed cost per call, so it overstates buckets made of many small calls."
        if unprofiled is not None
        else ""
    )
    return "\n".join(
        [
            "## Where the time per job goes\n",
            f"tickerq drain of {profile['n']:,} no-op jobs under cProfile "
            f"({profile['date']}; full top 25 in `bench/profile.txt`): "
            f"{profile['profiled_us_per_job']:.1f} µs/job of wall time under the profiler. "
            "Each function's own time (tottime) is put in a bucket by its module; "
            "helpers without a bucket of their own (builtins, `uuid.UUID.__hash__`, "
            "`dataclasses.replace`, `datetime.now`...) are charged to their callers in "
            "proportion." + unprofiled_note + "\n",
            _table(header, rows, [False, True, True, True][: len(header)]) + "\n",
            "Largest single functions (own time):\n",
            _table(["function", "calls", "µs/job"], top_rows, [False, True, True]) + "\n",
        ]
    )


def render(data: Record) -> str:
    m = data["machine"]
    cfg = data["config"]
    head = [
        "# tickerq benchmark: tickerq vs APScheduler 3\n",
        f"- date: {data['date']}",
        f"- command: `{data['command']}`",
        f"- python: {m['python']} ({m['implementation']}), {m['platform']}",
        f"- CPU: {m['cpu_model']}, {m['cores']} cores",
        f"- tickerq {m['tickerq']}, APScheduler {m['apscheduler']}",
        f"- every figure comes from its own fresh subprocess; throughput is the median of "
        f"{cfg['repeat']} run(s), lateness from {cfg['lateness_repeat']} run(s) "
        "(the one with the median p99)\n",
        "## Results\n",
    ]
    notes = [
        "## How it is measured\n",
        "- **drain**: tickerq: jobs added with `enqueue()` on an opened store, timed from "
        "`app.start()` until `engine.wait_idle()` returns (every status written); the count "
        "of DONE+DUE_DONE tickers must equal N. APScheduler: `AsyncIOScheduler` started "
        "paused, N `date` jobs (run_date now, misfire_grace_time=None, coalesce=False) put in "
        "its `MemoryJobStore`, timed from `resume()` to the N-th `EVENT_JOB_EXECUTED`.",
        "- **enqueue**: tickerq: `await fn.enqueue()` in a loop with the store opened and the "
        "engine **not started** (so no job runs during the loop); `schedule(at=now+1h)` shown "
        "too. APScheduler: `add_job(..., 'date', run_date=now+1h)` on a started scheduler.",
        "- **lateness**: engine/scheduler started, then all jobs scheduled with dues spread "
        f"uniformly from now+{cfg['lateness_lead']:g} s over {cfg['lateness_spread']:g} s; "
        "each job records `time.time() - due` when it starts (tickerq gets its due time as "
        "the request of a `TickerContext[float]` function).",
        "- **APScheduler setups**: *AsyncIOExecutor* is `AsyncIOScheduler()` as configured "
        "by default, which runs an `async def` job as a task on the loop; *10-thread pool* "
        "is `AsyncIOScheduler(executors={'default': ThreadPoolExecutor()})` "
        "(APScheduler's pool, 10 workers by default) with a plain `def` job.",
        "- **peak RSS**: `ru_maxrss` of the measuring subprocess (interpreter, imports and "
        "the N jobs).",
        "- **N matters for the drain ratio**: APScheduler's drain rate falls as N grows "
        "(compare the two drain tables): its `MemoryJobStore` keeps jobs in one sorted list "
        "and removes every finished date job with `del list[index]`, O(N) per job. The "
        "smaller-N drain shows the ratio without most of that effect.\n",
    ]
    return "\n".join(
        [
            *head,
            render_results(data),
            render_profile(data.get("profile"), data["results"].get("drain/tickerq")),
            *notes,
        ]
    )


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark tickerq against APScheduler 3.")
    parser.add_argument("--drain-n", type=int, default=100_000, help="jobs in the drain")
    parser.add_argument(
        "--drain-small-n",
        type=int,
        default=10_000,
        help="also drain this many jobs, to show how the figures move with N (0: skip)",
    )
    parser.add_argument("--enqueue-n", type=int, default=100_000, help="jobs enqueued")
    parser.add_argument("--lateness-n", type=int, default=1_000, help="jobs in lateness")
    parser.add_argument("--lateness-spread", type=float, default=5.0, help="seconds of dues")
    parser.add_argument("--lateness-lead", type=float, default=0.5, help="first due after (s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput figure")
    parser.add_argument("--lateness-repeat", type=int, default=1, help="runs per lateness")
    parser.add_argument("--profile-n", type=int, default=20_000, help="jobs in the profile")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--profile", action="store_true", help="only profile tickerq's drain (bench/profile.txt)"
    )
    mode.add_argument("--no-profile", action="store_true", help="skip the profile")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: small N, one run, short lateness"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.drain_n = args.enqueue_n = 5_000
        args.drain_small_n = 1_000
        args.lateness_n, args.lateness_spread = 200, 1.0
        args.repeat = args.lateness_repeat = 1
        args.profile_n = 2_000
    return args


def config_of(args: argparse.Namespace) -> Record:
    return {
        name: getattr(args, name)
        for name in (
            "drain_n",
            "drain_small_n",
            "enqueue_n",
            "lateness_n",
            "lateness_spread",
            "lateness_lead",
            "repeat",
            "lateness_repeat",
            "profile_n",
        )
    }


def write(data: Record) -> str:
    text = render(data)
    RESULTS_MD.write_text(text)
    RESULTS_JSON.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return text


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = "python bench/run.py" + ("" if not argv else " " + " ".join(argv))
    if args.profile:
        only = run_profile(args, command)
        if RESULTS_JSON.exists():
            previous: Record = json.loads(RESULTS_JSON.read_text())
            previous["profile"] = only
            write(previous)
        print(render_profile(only, None))
        print(f"wrote {PROFILE_TXT.relative_to(HERE.parent)}")
        return 0
    started = time.perf_counter()
    results = run_cases(args)
    profile = None if args.no_profile else run_profile(args, command)
    data: Record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "config": config_of(args),
        "results": results,
        "ratios": ratios(results),
        "targets": targets(results),
        "profile": profile,
        "bench_seconds": time.perf_counter() - started,
    }
    print(write(data))
    print(f"wrote bench/results.md, bench/results.json ({data['bench_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
