"""``python -m bench.run``: every figure, one command; tables printed and written to bench/results/.

Figures 1-5 (policy): each (scenario, policy, seed) is one trio run on a MockClock,
spread over worker processes (their wall time does not enter any figure). Figure 6
(process) then runs alone in real time, so that nothing competes with the measured
child. Figure 7 (foreign client) last.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from bench import figures, foreign, plots, resources
from bench.harness import Outcome, Scenario, run
from bench.policies import POLICIES
from bench.workloads import SCENARIOS, shrink

RESULTS = Path(__file__).resolve().parent / "results"


def _one(scenario: Scenario, policy: str, seed: int) -> Outcome:
    return run(policy, POLICIES[policy], scenario, seed)


def run_policies(
    scenarios: list[Scenario], policies: list[str], seeds: list[int], jobs: int
) -> figures.Runs:
    todo = [(s, p, seed) for s in scenarios for p in policies for seed in seeds]
    out: figures.Runs = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_one, *t): t for t in todo}
        for fut in concurrent.futures.as_completed(futures):
            s, p, seed = futures[fut]
            o = fut.result()
            print(f"  {s.name:15} {p:13} seed {seed}: {o.virtual_seconds:5.0f} virtual s "
                  f"in {o.wall_seconds:5.1f} s", flush=True)
            out.setdefault((s.name, p), []).append(o)
    for key in out:
        out[key].sort(key=lambda o: o.seed)
    # Keep the policies' order of POLICIES in the tables.
    return {k: out[k] for k in sorted(out, key=lambda k: (k[0], policies.index(k[1])))}


def _git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=RESULTS.parent.parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _outcome_json(o: Outcome) -> dict[str, Any]:
    return {
        "policy": o.policy, "scenario": o.scenario.name, "seed": o.seed,
        "share_ratios": o.share_ratios(), "jain": o.jain(),
        "latency_p50": {c.name: figures.percentile(o.latencies(c.name), 50)
                        for c in o.scenario.conns},
        "latency_p99": {c.name: figures.percentile(o.latencies(c.name), 99)
                        for c in o.scenario.conns},
        "ledger": o.ledger, "rpc_counts": o.rpc_counts, "fetches": o.fetches,
        "fetches_while_full": o.fetches_while_full, "empty_answers": o.empty_answers,
        "peak_running": o.peak_running,
        "overshoots": o.overshoots, "virtual_seconds": o.virtual_seconds,
        "wall_seconds": o.wall_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                        help="seeds for figures 1-5 (default: 1 2 3)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes for figures 1-5")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS),
                        help="run only these scenarios (figures 1-5)")
    parser.add_argument("--quick", type=float, metavar="SECONDS",
                        help="shorten every scenario to SECONDS of arrivals (a smoke run)")
    parser.add_argument("--skip-resources", action="store_true", help="no figure 6")
    parser.add_argument("--skip-foreign", action="store_true", help="no figure 7")
    parser.add_argument("--tasks", type=int, default=1000, help="no-op tasks for figure 6")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    scenarios = [SCENARIOS[n] for n in (args.only or SCENARIOS)]
    if args.quick:
        scenarios = [shrink(s, args.quick) for s in scenarios]
    policies = list(POLICIES)
    print(f"figures 1-5: {len(scenarios)} scenarios x {len(policies)} policies x "
          f"{len(args.seeds)} seed(s), virtual time, {args.jobs} worker(s)", flush=True)
    runs = run_policies(scenarios, policies, args.seeds, args.jobs)
    t_policies = time.perf_counter() - started

    res: dict[str, Any] | None = None
    t_res = 0.0
    if not args.skip_resources:
        print("figure 6: CPU, throughput and RSS in real time ...", flush=True)
        t = time.perf_counter()
        load_before = os.getloadavg()[0]
        res = resources.measure(tasks=args.tasks)
        res["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        t_res = time.perf_counter() - t
    fres: dict[str, Any] | None = None
    t_foreign = 0.0
    if not args.skip_foreign:
        print("figure 7: snakey-runner against the simulator ...", flush=True)
        t = time.perf_counter()
        fres = foreign.measure()
        t_foreign = time.perf_counter() - t

    tables = [figures.fig1(runs), figures.fig2(runs), figures.fig3(runs), figures.fig4(runs),
              figures.fig5(runs)]
    if res:
        tables += figures.fig6(res)
    if fres:
        tables.append(figures.fig7(fres))
    total = time.perf_counter() - started

    command = "python -m bench.run" + (f" {' '.join(argv)}" if argv else
                                       (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""))
    head = [
        "# Benchmark results",
        "",
        f"Produced by `{command.strip()}` at commit {_git_head()} on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: Python {platform.python_version()}, "
        f"trio {trio.__version__}, {os.cpu_count()} CPU(s), {platform.machine()}. "
        f"Seeds {', '.join(map(str, args.seeds))}.",
        "",
        f"Wall time: {total:.0f} s in all — figures 1-5 {t_policies:.0f} s "
        f"({args.jobs} worker processes), figure 6 {t_res:.0f} s, figure 7 {t_foreign:.0f} s.",
        "",
        "Figures 1-5 run on virtual time (trio MockClock, autojump) over real loopback HTTP "
        "to the in-process simulator; `forgejo-12.8` and `gitlab` are models of those "
        "policies written in bench/policies/, sharing our client, `run_task`, executor and "
        "simulator with `ours` (the real service). See bench/README.md.",
        "",
    ]
    if args.quick:
        head += [f"**Quick run: every scenario shortened to {args.quick:g} s of arrivals.**", ""]
    text = "\n".join(head) + "\n" + "\n".join(t.markdown() for t in tables)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(text)
    (args.out / "latest.json").write_text(json.dumps({
        "command": command.strip(), "seeds": args.seeds, "wall_seconds": total,
        "runs": [_outcome_json(o) for os_ in runs.values() for o in os_],
        "resources": res, "foreign": fres,
        "scenarios": {s.name: attrs.asdict(s) for s in scenarios},
    }, indent=1, default=str))
    pngs: list[Path] = []
    if plots.available():
        pngs = plots.write_all(runs, res, args.out)
    else:
        print("matplotlib is not installed: no PNGs (pip install -e '.[bench]')")
    print()
    for t in tables:
        print(t.text())
    print(f"written: {args.out / 'latest.md'}, {args.out / 'latest.json'}"
          + "".join(f", {p.name}" for p in pngs))
    print(f"total wall time {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
