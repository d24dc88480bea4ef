"""PNG plots of the figures (matplotlib, optional: ``pip install -e '.[bench]'``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.figures import Runs, _others_p99, policies_in
from bench.harness import Outcome, percentile
from bench.workloads import DROPS, HOL_BLACKHOLED, HOL_HEALTHY, MODERATE, SATURATED

COLORS = {"ours": "#2a7ab0", "forgejo-12.8": "#e07b39", "gitlab": "#6a4c93"}


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _mean(runs: Runs, scenario: str, policy: str, fn: Callable[[Outcome], float]) -> float:
    vals = [fn(o) for o in runs.get((scenario, policy), [])]
    vals = [v for v in vals if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def write_all(runs: Runs, resources: dict[str, Any] | None, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    policies = policies_in(runs)
    width = 0.8 / max(1, len(policies))

    def save(fig: Any, name: str) -> None:
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    def bars(ax: Any, groups: list[str], values: dict[str, list[float]],
             labels: dict[str, str] | None = None, fmt: str | None = None) -> None:
        for i, p in enumerate(policies):
            xs = [g + (i - (len(policies) - 1) / 2) * width for g in range(len(groups))]
            drawn = ax.bar(xs, values[p], width, label=(labels or {}).get(p, p),
                           color=COLORS.get(p))
            if fmt:
                ax.bar_label(drawn, fmt=fmt, fontsize=8)
        ax.set_xticks(range(len(groups)), groups)

    # Figure 1
    if any((SATURATED.name, p) in runs for p in policies):
        fig, ax = plt.subplots(figsize=(7, 4))
        conns = SATURATED.conns
        vals = {p: [_mean(runs, SATURATED.name, p, lambda o, n=c.name: o.share_ratios()[n])
                    for c in conns] for p in policies}
        labels = {p: f"{p}: weighted Jain {_mean(runs, SATURATED.name, p, lambda o: o.jain()):.3f}"
                  for p in policies}
        bars(ax, [f"{c.name} (w {c.weight:g}, {c.fetch_interval:g} s)" for c in conns], vals,
             labels)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="fair share")
        ax.legend()
        ax.set_ylabel("slot-seconds ÷ weighted fair share")
        ax.set_title("Fig. 1 — share of the slots at saturation (1 = fair)")
        save(fig, "fig1_fairness.png")

    # Figure 2
    if any((MODERATE.name, p) in runs for p in policies):
        fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=False)
        for ax, q in zip(axes, (50, 99), strict=True):
            vals = {p: [_mean(runs, MODERATE.name, p,
                              lambda o, n=c.name, q=q: percentile(o.latencies(n), q))
                        for c in MODERATE.conns] for p in policies}
            bars(ax, [f"{c.name} ({c.fetch_interval:g} s)" for c in MODERATE.conns], vals)
            ax.set_title(f"p{q}")
            ax.set_ylabel("pickup latency (s)")
        axes[0].legend()
        fig.suptitle("Fig. 2 — pickup latency at moderate load")
        save(fig, "fig2_pickup_latency.png")

    # Figure 3
    if any((HOL_BLACKHOLED.name, p) in runs for p in policies):
        fig, ax = plt.subplots(figsize=(6, 4))
        ratios = []
        for p in policies:
            hs = runs.get((HOL_HEALTHY.name, p), [])
            ds = runs.get((HOL_BLACKHOLED.name, p), [])
            rs = [_others_p99(d) / _others_p99(h) for h, d in zip(hs, ds, strict=False)]
            ratios.append(sum(rs) / len(rs) if rs else math.nan)
        ax.bar(policies, ratios, color=[COLORS.get(p) for p in policies])
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        for x, r in enumerate(ratios):
            ax.annotate(f"{r:.2f}x", (x, r), ha="center", va="bottom")
        ax.set_ylabel("others' p99 pickup, black-holed ÷ healthy (log)")
        ax.set_title("Fig. 3 — head-of-line blocking by a black-holed instance")
        save(fig, "fig3_head_of_line.png")

    # Figure 4
    if any((SATURATED.name, p) in runs for p in policies):
        fig, ax = plt.subplots(figsize=(6, 4))
        groups = ["saturated", "moderate load"]
        vals = {p: [_mean(runs, s.name, p, lambda o: o.fetch_calls() / o.delivered())
                    for s in (SATURATED, MODERATE)] for p in policies}
        bars(ax, groups, vals, fmt="%.2f")
        ax.set_ylabel("FetchTask calls ÷ delivered task")
        ax.legend()
        ax.set_title("Fig. 4 — fetch cost per task")
        save(fig, "fig4_fetch_calls.png")

    # Figure 5
    if any((DROPS.name, p) in runs for p in policies):
        fig, ax = plt.subplots(figsize=(7, 4))
        groups = ["lost tasks", "duplicate executions", "capacity overshoots"]
        vals = {p: [_mean(runs, DROPS.name, p, lambda o: float(o.ledger["lost"])),
                    _mean(runs, DROPS.name, p, lambda o: float(o.ledger["duplicate_executions"])),
                    _mean(runs, DROPS.name, p, lambda o: float(o.overshoots))]
                for p in policies}
        bars(ax, groups, vals, fmt="%.1f")
        ax.set_ylabel("count per run (mean over seeds)")
        ax.legend()
        ax.set_title("Fig. 5 — 10 % respond-then-drop, Forgejo 15")
        save(fig, "fig5_drops.png")

    # Figure 6
    if resources:
        fig, ax = plt.subplots(figsize=(6, 4))
        idle = resources["idle"]
        xs = [r["connections"] for r in idle]
        ax.plot(xs, [r["vm_rss_mib"] for r in idle], marker="o", label="service, idle connections")
        ax.axhline(resources["imports"]["vm_rss_mib"], color="grey", linestyle="--",
                   label="interpreter + imports only")
        ax.set_xscale("log")
        ax.set_xlabel("connections")
        ax.set_ylabel("VmRSS (MiB)")
        t = resources["throughput"]
        ax.set_title(f"Fig. 6 — RSS; no-op tasks: {1000 * t['cpu_s'] / t['tasks']:.1f} "
                     f"CPU ms/task, {t['tasks'] / t['wall_s']:.0f} tasks/s", fontsize=10)
        ax.legend()
        save(fig, "fig6_resources.png")
    return written
