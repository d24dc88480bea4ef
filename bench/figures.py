"""From runs to numbers: the tables of bench/results/latest.md.

Every number here is computed from the :class:`~bench.harness.Outcome` of a run (or
the JSON a measurement subprocess printed); nothing is typed in. With several seeds
a cell shows the mean over seeds and, in brackets, the smallest and largest value.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from bench.harness import Outcome, percentile
from bench.workloads import DROPS, HOL_BLACKHOLED, HOL_HEALTHY, MODERATE, SATURATED

Runs = dict[tuple[str, str], list[Outcome]]  # (scenario name, policy) -> one per seed


@attrs.define
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = attrs.field(factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines.append("")
            lines += self.notes
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
                  for i, h in enumerate(self.header)]
        out = [self.title, "  ".join(h.ljust(w) for h, w in zip(self.header, widths, strict=True))]
        out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in self.rows]
        return "\n".join(out) + "\n"


def cell(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return fmt.format(vals[0])
    lo, hi = min(vals), max(vals)
    mean = statistics.fmean(vals)
    return f"{fmt.format(mean)} ({fmt.format(lo)}-{fmt.format(hi)})"


def _per_seed(runs: Runs, scenario: str, policy: str,
              fn: Callable[[Outcome], float]) -> list[float]:
    return [fn(o) for o in runs.get((scenario, policy), [])]


def policies_in(runs: Runs) -> list[str]:
    seen: list[str] = []
    for _, p in runs:
        if p not in seen:
            seen.append(p)
    return seen


# --------------------------------------------------------------------------- figures


def fig1(runs: Runs) -> Table:
    sc = SATURATED
    shares = sc.fair_shares()
    names = [c.name for c in sc.conns]
    header = ["policy"] + [
        f"{c.name}: slot-s ÷ fair (w {c.weight:g}, every {c.fetch_interval:g} s)" for c in sc.conns
    ] + ["weighted Jain", "Jain of raw slot-s"]
    rows = []
    for p in policies_in(runs):
        row = [p]
        for n in names:
            row.append(cell(_per_seed(runs, sc.name, p, lambda o, n=n: o.share_ratios()[n])))
        row.append(cell(_per_seed(runs, sc.name, p, lambda o: o.jain()), "{:.3f}"))
        row.append(cell(_per_seed(runs, sc.name, p, lambda o: o.jain(weighted=False)), "{:.3f}"))
        rows.append(row)
    target = ", ".join(f"{n} {shares[n]:g}" for n in names)
    return Table(
        "Figure 1 — fairness at saturation: slot-seconds ÷ weighted fair share",
        header, rows,
        [f"Capacity {sc.capacity}; fair shares (slots): {target}. Slot-seconds = seconds x tasks "
         f"executing, from {sc.warmup:g} s to {sc.duration:g} s (virtual). 1.00 = exactly the "
         "weighted share. Weighted Jain index over the ratios (1 = fair, 1/3 = one takes all); "
         "the last column ignores the weights (equal split = 1)."],
    )


def fig2(runs: Runs) -> Table:
    sc = MODERATE
    header = ["policy"]
    for c in sc.conns:
        header += [f"{c.name} p50 (s)", f"{c.name} p99 (s)"]
    header.append("pickups")
    rows = []
    for p in policies_in(runs):
        row = [p]
        for c in sc.conns:
            for q in (50, 99):
                row.append(cell(_per_seed(
                    runs, sc.name, p, lambda o, n=c.name, q=q: percentile(o.latencies(n), q))))
        row.append(cell(_per_seed(runs, sc.name, p, lambda o: float(len(o.spans))), "{:.0f}"))
        rows.append(row)
    load = sum(c.rate for c in sc.conns) * statistics.fmean(sc.conns[0].durations) / sc.capacity
    return Table(
        "Figure 2 — pickup latency (job queued on the simulator → task started on the runner)",
        header, rows,
        [f"Moderate load: {'/'.join(f'{c.rate:g}' for c in sc.conns)} jobs/s on a/b/c "
         f"(≈{load:.0%} of capacity {sc.capacity}), fetch intervals "
         f"{'/'.join(f'{c.fetch_interval:g}' for c in sc.conns)} s (GitLab: one "
         f"check_interval of {sc.check_interval:g} s), {sc.duration:g} virtual seconds. "
         "Nearest-rank percentiles."],
    )


def _others_p99(o: Outcome) -> float:
    lat = sorted(x for c in ("a", "b", "c") for x in o.latencies(c))
    return percentile(lat, 99)


def fig3(runs: Runs) -> Table:
    header = ["policy", "p99 a+b+c, d healthy (s)", "p99 a+b+c, d black-holed (s)",
              "ratio (black-holed ÷ healthy)", "a ratio", "b ratio", "c ratio"]
    rows = []
    for p in policies_in(runs):
        healthy = runs.get((HOL_HEALTHY.name, p), [])
        dead = runs.get((HOL_BLACKHOLED.name, p), [])
        pairs = list(zip(healthy, dead, strict=False))
        row = [p, cell([_others_p99(h) for h in healthy]), cell([_others_p99(d) for d in dead]),
               cell([_others_p99(d) / _others_p99(h) for h, d in pairs])]
        for n in ("a", "b", "c"):
            row.append(cell([percentile(d.latencies(n), 99) / percentile(h.latencies(n), 99)
                             for h, d in pairs]))
        rows.append(row)
    return Table(
        "Figure 3 — head-of-line blocking: the others' p99 pickup latency with one instance "
        "black-holed",
        header, rows,
        [f"Figure 2's workload plus a fourth connection d with no jobs; in the black-holed run "
         f"d's FetchTask is accepted and never answered, so each attempt waits the client's "
         f"fetch_timeout ({HOL_HEALTHY.fetch_timeout:g} s, the same for every policy). "
         "Ratio 1.00 = d's outage costs the others nothing."],
    )


def fig4(runs: Runs) -> Table:
    sc = SATURATED
    header = ["policy", "FetchTask calls ÷ delivered task (saturated)"]
    header += [f"{c.name}" for c in sc.conns]
    header += ["calls while all slots were executing", "calls ÷ task (moderate load)",
               "empty answers ÷ task (moderate load)"]
    rows = []
    for p in policies_in(runs):
        row = [p, cell(_per_seed(runs, sc.name, p, lambda o: o.fetch_calls() / o.delivered()))]
        for c in sc.conns:
            row.append(cell(_per_seed(
                runs, sc.name, p,
                lambda o, n=c.name: o.fetch_calls(n) / max(1, o.delivered(n)))))
        row.append(cell(_per_seed(runs, sc.name, p,
                                  lambda o: float(sum(o.fetches_while_full.values()))), "{:.0f}"))
        row.append(cell(_per_seed(runs, MODERATE.name, p,
                                  lambda o: o.fetch_calls() / o.delivered())))
        row.append(cell(_per_seed(runs, MODERATE.name, p,
                                  lambda o: sum(o.empty_answers.values()) / o.delivered())))
        rows.append(row)
    return Table(
        "Figure 4 — FetchTask calls per delivered task",
        header, rows,
        ["Calls = FetchTask requests the simulator received (every attempt). 'While all slots "
         "were executing' = calls sent while the runner had `capacity` tasks running (counted "
         "in the client wrapper). Empty answers: answers that carried no task."],
    )


def fig5(runs: Runs) -> Table:
    sc = DROPS
    header = ["policy", "assigned", "delivered", "finished", "lost", "of which zombie-reaped",
              "duplicate executions", "runner peak tasks (capacity 4)",
              "capacity overshoots (events)", "server peak outstanding"]
    rows = []
    for p in policies_in(runs):
        def g(key: str) -> Callable[[Outcome], float]:
            return lambda o: float(o.ledger[key])
        row = [p]
        for key in ("assigned", "delivered", "finished", "lost", "zombie",
                    "duplicate_executions"):
            row.append(cell(_per_seed(runs, sc.name, p, g(key)), "{:.0f}"))
        row.append(cell(_per_seed(runs, sc.name, p, lambda o: float(o.peak_running)), "{:.0f}"))
        row.append(cell(_per_seed(runs, sc.name, p, lambda o: float(o.overshoots)), "{:.0f}"))
        row.append(cell(_per_seed(runs, sc.name, p, g("peak_outstanding")), "{:.0f}"))
        rows.append(row)
    return Table(
        "Figure 5 — 10 % respond-then-drop, Forgejo 15 (replay by request key)",
        header, rows,
        [f"Saturated workload of figure 1; 10 % of the FetchTask answers that carry tasks are "
         f"dropped after the server assigned them. Lost = not finished at the end "
         f"({sc.duration:g} s of arrivals + up to {sc.drain:g} s drain), or failed by the "
         f"zombie reaper ({sc.zombie_timeout:g} s). Runner peak / overshoots: tasks executing "
         "at once on the runner side, and how many times that went above the capacity. "
         "Server peak outstanding also counts tasks the runner never got."],
    )


def fig6(res: dict[str, Any]) -> list[Table]:
    t = res["throughput"]
    tables = [Table(
        "Figure 6a — CPU per task and throughput, no-op jobs (`ours`, real time)",
        ["tasks", "capacity", "tasks/s", "CPU ms/task (service process)",
         "CPU ms/task (simulator, other process)", "service RSS at end (MiB)", "lost",
         "duplicates"],
        [[str(t["tasks"]), str(t["capacity"]), f"{t['tasks'] / t['wall_s']:.1f}",
          f"{1000 * t['cpu_s'] / t['tasks']:.2f}", f"{1000 * t['sim_cpu_s'] / t['tasks']:.2f}",
          f"{t['vm_rss_mib']:.1f}", str(t["lost"]), str(t["duplicate_executions"])]],
        ["The service runs in a child process (SimulatedExecutor, `sleep 0` jobs, metrics "
         "endpoint on, state files on disk); `time.process_time()` and `perf_counter()` from "
         "its first task start to its last final report. The simulator's CPU is this "
         "process's `process_time()` over the child's whole life. CPU time is the process's "
         "own; tasks/s is wall time and depends on what else runs: 1-minute load average "
         f"{res.get('loadavg_1min', ['?', '?'])[0]} before and "
         f"{res.get('loadavg_1min', ['?', '?'])[1]} after figure 6 on this 2-CPU machine."],
    )]
    rows = [["imports only", f"{res['imports']['vm_rss_mib']:.1f}",
             f"{res['imports']['vm_hwm_mib']:.1f}", f"{res['imports']['ru_maxrss_mib']:.1f}"]]
    for r in res["idle"]:
        rows.append([str(r["connections"]), f"{r['vm_rss_mib']:.1f}", f"{r['vm_hwm_mib']:.1f}",
                     f"{r['ru_maxrss_mib']:.1f}"])
    tables.append(Table(
        "Figure 6b — memory with idle connections (`ours`, one process per size)",
        ["connections", "VmRSS (MiB)", "VmHWM (MiB)", "ru_maxrss (MiB)"], rows,
        ["Each child starts the service, waits until every connection has declared, idles "
         "5 s (fetch interval 1 s), then reads /proc/self/status and getrusage. "
         "'imports only' = the same interpreter after importing the service, nothing started. "
         "Read VmRSS/VmHWM: Linux carries ru_maxrss across fork and exec, so for the small "
         "children it shows the parent's (this benchmark process's) high-water mark."],
    ))
    return tables


def fig7(res: dict[str, Any]) -> Table:
    if not res.get("ran"):
        rows = [[c["command"], str(c["exit"]), " / ".join(c["tail"])] for c in res["commands"]]
        return Table(
            f"Figure 7 — foreign client `{res['package']}`: could not run",
            ["command", "exit", "output (last lines)"], rows,
            ["Interpreters looked at: " + "; ".join(res["interpreters"] or ["none"])],
        )
    rows = []
    for r in res["runs"]:
        led = r["ledger"]
        steps = sorted({s for t in r["tasks"] for s in t["steps"]})
        outcome = ("exited by itself with status "
                   f"{r['exit']}: {r['output_tail'][-1]}" if r["exited_by_itself"]
                   else f"stopped with SIGINT after {r['seconds']:g} s")
        rows.append([
            f"Forgejo {r['forgejo']}", str(r["jobs"]), str(led["delivered"]),
            str(led["finished"]), ", ".join(f"{k} {v}" for k, v in led["results"].items()) or "-",
            ", ".join(steps) or "-", str(led["lost"]), str(led["duplicate_executions"]),
            ", ".join(f"{k} {v}" for k, v in r["rpc_counts"].items()), outcome,
        ])
    return Table(
        f"Figure 7 — foreign client `{res['package']}` against the simulator",
        ["simulator mode", "jobs queued", "delivered", "finished", "results", "step states",
         "lost", "duplicates", "RPCs received", "client"], rows,
        [f"Installed in its own venv (Python {res['client_python']}; this project's venv is Python "
         f"{res['host_python']}). Commands: "
         + "; ".join(f"`{c['command']}` → {c['exit']}" for c in res["commands"]) + ".",
         "It fetches with FetchSingleTask (a Forgejo 15 RPC) and no request key, so against "
         "the Forgejo 14 mode it gets 404 and exits; that row checks that the simulator "
         "refuses what Forgejo 14 lacks."],
    )
