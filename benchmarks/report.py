"""The benchmark report: one Markdown file (tables, goals met or not) and one PNG plot."""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["GOALS", "machine", "markdown", "plot"]

PACKAGES = ("hposdk", "optuna", "ray", "hpbandster", "ConfigSpace", "clearml", "torch", "numpy", "cmaes")

#: (key, text) of the issue's goals, in order.
GOALS = (
    ("local_overhead", "local backend (with its journal) adds at most 10% to Optuna in-memory, same sampler"),
    ("sqlite_10x", "local backend at least 10x cheaper per trial than Optuna's SQLite storage"),
    ("ray_overhead", "Ray backend adds at most 10% to a hand-written Ray Tune Tuner"),
    ("import", "`import hposdk` under 0.3 s"),
    ("auto_best", "auto's median regret no worse than the best single peer, on every problem"),
    ("auto_defaults", "auto strictly better than each engine's default on at least half the problems"),
    ("adapters", "the same optimizer gives statistically the same regret on every backend"),
    ("parallel", "max_concurrent=2, sleep-bound objective: wall time within 10% of ideal (local and Ray)"),
    ("suite_time", "the full suite runs in under 15 minutes"),
)


def machine() -> dict[str, Any]:
    """Date, machine and versions for the report header."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "not installed"
    try:
        load = os.getloadavg()
    except OSError:
        load = (math.nan, math.nan, math.nan)
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpus": os.cpu_count(), "cpu": cpu,
            "platform": platform.platform(), "python": sys.version.split()[0], "versions": versions,
            "load_start": load[0]}


def _g(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def _ms(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else (f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}")


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def evaluate_goals(r: dict[str, Any]) -> dict[str, tuple[bool | None, str]]:
    """Each goal: (met, the figures behind it)."""
    out: dict[str, tuple[bool | None, str]] = {}
    local = r.get("local") or []
    tpe = list(local)
    if tpe:
        worst = max(tpe, key=lambda row: row["ratio_cpu"])
        figures = ", ".join(f"{row['what']} {row['trials']}: {row['ratio_cpu']:.2f}x" for row in tpe)
        out["local_overhead"] = (all(row["ratio_cpu"] <= 1.10 for row in tpe),
                                 f"CPU-time ratios {figures} (worst {worst['what']} {worst['trials']})")
    sql = [(row, row["refs"].get("Optuna SQLite")) for row in local if row["what"] == "random"]
    sql = [(row, v) for row, v in sql if v is not None and not math.isnan(v)]
    if sql:
        ratios = [v / row["ours_ms"] for row, v in sql]
        out["sqlite_10x"] = (min(ratios) >= 10, "random search (storage cost alone): SQLite / hposdk = "
                             + ", ".join(f"{x:.0f}x at {row['trials']}" for (row, _), x in zip(sql, ratios)))
    ray = r.get("ray") or []
    if ray:
        out["ray_overhead"] = (all(row["ratio_wall"] <= 1.10 for row in ray), "wall-clock ratios "
                               + ", ".join(f"{row['trials']} trials: {row['ratio_wall']:.2f}x" for row in ray))
    imp = r.get("import")
    if imp:
        cpu = imp.get("cpu_seconds", math.nan) * 1e3
        out["import"] = (imp["seconds"] < 0.3, f"{imp['seconds'] * 1e3:.0f} ms wall, {cpu:.0f} ms CPU, bytecode "
                         f"cached{_from_source(imp)}; engines loaded: {imp['engines_loaded']}")
    reg = r.get("regret")
    if reg and reg["goals"]["per_problem"]:
        goals = reg["goals"]
        worse = [p for p, row in goals["per_problem"].items() if not row["no_worse_than_best"]]
        out["auto_best"] = (goals["no_worse_everywhere"], "worse than the best peer on: " + (", ".join(
            f"{p} ({_g(goals['per_problem'][p]['auto'])} vs {goals['per_problem'][p]['best_peer']} "
            f"{_g(goals['per_problem'][p]['best_peer_median'])})" for p in worse) or "none"))
        out["auto_defaults"] = (goals["beats_each_default_on_half"], "; ".join(
            f"{peer}: {w}/{goals['problems']}" for peer, w in goals["wins"].items()))
        adapters = reg["adapters"]
        if adapters:
            bad = [a for a in adapters if not a["same"]]
            out["adapters"] = (not bad, f"{len(adapters) - len(bad)}/{len(adapters)} pairs same" + (
                "; differ: " + ", ".join(f"{a['problem']} {a['a']} vs {a['b']} (p={a['p']:.3f})" for a in bad)
                if bad else ""))
    par = r.get("parallel") or []
    if par:
        out["parallel"] = (all(p["ratio"] <= 1.10 for p in par), "wall / ideal: " + ", ".join(
            f"{p['backend']} {p['ratio']:.2f} (steady state {p['span_ratio']:.2f}"
            + (f"; the engine alone {p['engine_ratio']:.2f}" if p.get("engine_ratio") else "") + ")" for p in par))
    if r.get("wall_s") is not None and not r.get("quick"):
        out["suite_time"] = (r["wall_s"] < 900, f"{r['wall_s'] / 60:.1f} min")
    return out


def markdown(r: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    m = r["meta"]
    v = m["versions"]
    lines = [
        f"Run {m['date']} on {m['cpus']} CPU(s) ({m['cpu']}; {m['platform']}; load average "
        f"{m['load_start']:.1f} at the start: the machine is shared, so timings are noisy), Python {m['python']}; "
        + ", ".join(f"{k} {v[k]}" for k in v) + ".",
        "",
        f"Command: `{r['command']}` ({r['wall_s'] / 60:.1f} min"
        + (", quick mode: tiny budgets, figures not meaningful" if r.get("quick") else "") + ").",
        "",
        "### Goals",
        "",
        "| goal | result | figures |",
        "|---|---|---|",
    ]
    evaluated = evaluate_goals(r)
    for key, text in GOALS:
        ok, figures = evaluated.get(key, (None, "not measured in this run"))
        lines.append(f"| {text} | {_mark(ok)} | {figures} |")
    lines += _overhead_md(r) + _parallel_md(r) + _regret_md(r)
    return "\n".join(lines) + "\n"


def _from_source(imp: dict[str, Any]) -> str:
    """The same import in this machine's own environment, when that compiles hposdk from source."""
    if not imp.get("source_compiled") or "seconds_this_env" not in imp:
        return ""
    return f" ({imp['seconds_this_env'] * 1e3:.0f} ms here, where PYTHONDONTWRITEBYTECODE=1 compiles it from source)"


def _overhead_md(r: dict[str, Any]) -> list[str]:
    out: list[str] = []
    imp, st = r.get("import"), r.get("startup")
    if imp or st:
        out += ["", "### Import and start-up", ""]
        if imp:
            cpu = imp.get("cpu_seconds", math.nan) * 1e3
            out.append(f"`import hposdk`: {imp['seconds'] * 1e3:.0f} ms wall, {cpu:.0f} ms CPU, with bytecode cached "
                       f"as after `pip install`{_from_source(imp)} (medians of fresh interpreters; engine modules "
                       f"loaded by it: {imp['engines_loaded']}). The local and Optuna start-up rows below run with "
                       "bytecode cached too.")
        if st:
            out += ["", "| fresh process to first finished trial | hposdk | engine alone |", "|---|---:|---:|",
                    f"| local backend vs Optuna (TPE, in-memory) | {st['local']:.2f} s | {st['optuna']:.2f} s |"]
            if "ray" in st:
                out.append(f"| Ray backend vs hand-written Tuner (incl. `ray.init`) | {st['ray']:.1f} s "
                           f"(peak {st['ray_gib']:.2f} GiB) | {st['tuner']:.1f} s (peak {st['tuner_gib']:.2f} GiB) |")
                if "tuner_default" in st:
                    out.append(f"| the same Tuner with Ray's default loggers (TensorBoard's too) | | "
                               f"{st['tuner_default']:.1f} s (peak {st['tuner_default_gib']:.2f} GiB) |")
            out += ["", "Peak memory: resident set of the driver and every process it started (raylet, GCS, workers). "
                    "Every hand-written Tuner here writes what hposdk on Ray writes, Ray's CSV and JSON result "
                    "files; Ray's default also adds a TensorBoard logger, which imports tensorboardX and torch into "
                    "the driver (hposdk: `backend_options={'tensorboard': True}`)."]
    local = r.get("local")
    if local:
        out += ["", "### Local backend vs Optuna, same sampler (ms per trial)", "",
                "CPU time of the benchmark process per trial (median of the runs; wall-clock ratio in its own "
                "column). hposdk includes its durable journal (two flushed lines per trial) and building its "
                "result at the end.", "",
                "| sampler | trials | runs | hposdk local | Optuna in-memory | hposdk / in-memory (CPU) | (wall) "
                "| Optuna journal file | Optuna SQLite |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in local:
            refs = row["refs"]
            out.append(f"| {row['what']} | {row['trials']} | {row['runs']} | {_ms(row['ours_ms'])} | "
                       f"{_ms(row['engine_ms'])} | {row['ratio_cpu']:.2f}x | {row['ratio_wall']:.2f}x | "
                       f"{_ms(refs.get('Optuna journal file', math.nan))} | "
                       f"{_ms(refs.get('Optuna SQLite', math.nan))} |")
    ray = r.get("ray")
    if ray:
        out += ["", "### Ray backend vs a hand-written Tuner (ms per trial, wall clock)", "",
                "Random search, one trial at a time, `reuse_actors=True`, one Ray runtime started before.", "",
                "| trials | runs | hposdk on Ray | hand-written Tuner | ratio |", "|---:|---:|---:|---:|---:|"]
        for row in ray:
            out.append(f"| {row['trials']} | {row['runs']} | {_ms(row['ours_wall_ms'])} | {_ms(row['engine_wall_ms'])} "
                       f"| {row['ratio_wall']:.2f}x |")
    bohb = r.get("bohb")
    if bohb:
        out += ["", "### Local BOHB vs raw hpbandster (ms per evaluation, wall clock)", "",
                "Whole runs of a trivial objective (budgets 1..27, eta 3): name server, worker, run and "
                "shutdown; hposdk includes its journal.", "",
                "| evaluations (about) | runs | hposdk BOHB | raw hpbandster BOHB | ratio |",
                "|---:|---:|---:|---:|---:|"]
        for row in bohb:
            out.append(f"| {row['trials']} | {row['runs']} | {_ms(row['ours_wall_ms'])} | {_ms(row['engine_wall_ms'])} "
                       f"| {row['ratio_wall']:.2f}x |")
    return out


def _parallel_md(r: dict[str, Any]) -> list[str]:
    par = r.get("parallel")
    if not par:
        return []
    out = ["", "### Parallel efficiency (max_concurrent=2, sleep-bound objective)", "",
           "| backend | trials x sleep | ideal | wall | wall / ideal | first call to last end | span / ideal "
           "| engine alone: wall / ideal |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for p in par:
        engine = p.get("engine_ratio")
        out.append(f"| {p['backend']} | {p['trials']} x {p['sleep_s']:g} s | {p['ideal_s']:.1f} s "
                   f"| {p['wall_s']:.1f} s | {p['ratio']:.2f} | {p['span_s']:.1f} s | {p['span_ratio']:.2f} "
                   f"| {'n/a' if engine is None else f'{engine:.2f}'} |")
    out += ["", "Wall time is the whole `optimize()`: worker processes (local, `spawn`) or trial actors (Ray, "
            "runtime already up) are started in it. The span, from the first objective call's start to the last "
            "one's end as the objective's clock reads them, leaves that start-up out. Engine alone: Optuna's "
            "`optimize(n_jobs=2)` (threads) for local, a hand-written `Tuner` with `max_concurrent_trials=2` for "
            "Ray."]
    return out


def _regret_md(r: dict[str, Any]) -> list[str]:
    reg = r.get("regret")
    if not reg:
        return []
    table, problems = reg["table"], reg["problems"]
    names = [p for p in problems if p in table]
    labels: list[str] = []
    for p in names:
        labels += [label for label in table[p] if label not in labels]
    fewer = reg.get("ray_mf_seeds", reg["seeds"])
    out = ["", f"### Simple regret: median [IQR] over {reg['seeds']} seeds", "",
           *([f"Except the Ray arms on hartmann6_mf: {fewer} seeds (`--ray-mf-seeds`).", ""]
             if fewer < reg["seeds"] else []),
           *([f"Raw hpbandster (a reference, not a backend): {raw} seeds; local/bohb reproduces it evaluation "
              "for evaluation, so their regrets are identical seed by seed (the adapter check below).", ""]
             if (raw := reg.get("raw_hpbandster_seeds", reg["seeds"])) < reg["seeds"] else []),
           "Problems: " + "; ".join(f"**{p}**: {problems[p]}" for p in names) + ".", "",
           "| optimizer | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label in labels:
        cells = []
        for p in names:
            c = table[p].get(label)
            if c is None:
                cells.append("")
                continue
            cell = f"{_g(c['median'])} [{_g(c['q1'], 2)}, {_g(c['q3'], 2)}]"
            if c["n"] < len(c["regrets"]):
                cell += f" ({len(c['regrets']) - c['n']} failed)"
            if label.endswith("/auto") and c["chosen"]:
                cell += f" ({c['chosen']})"
            if c.get("note"):
                cell += f" ({c['note']})"
            cells.append(cell)
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "`raw-*`: the engine used directly (no hposdk). `local/bohb` on single-fidelity problems runs "
            "hpbandster with min_budget = max_budget (its KDE model alone). On the multi-fidelity problem a budget "
            "of N units allows N x 27 epochs; pruned trials cost the epochs they ran.", ""]
    secs = [(p, label, sum(c["seconds"]) / max(len(c["seconds"]), 1)) for p in names for label, c in table[p].items()]
    if secs:
        slow = sorted(secs, key=lambda t: -t[2])[:5]
        out.append("Slowest arms (mean seconds per run, on the shared machine): "
                   + ", ".join(f"{label} on {p} {s:.1f}" for p, label, s in slow) + ".")
    goals = reg["goals"]
    if goals["per_problem"]:
        peers = list(goals["wins"])
        out += ["", "#### optimizer='auto' against the peers", "",
                "| problem | auto (chose) | best peer | auto no worse? | " + " | ".join(f"beats {p}?" for p in peers)
                + " |", "|---|---|---|---|" + "---|" * len(peers)]
        for p, row in goals["per_problem"].items():
            out.append(f"| {p} | {_g(row['auto'])} ({row['chosen']}) | {row['best_peer']} "
                       f"{_g(row['best_peer_median'])} "
                       f"| {'yes' if row['no_worse_than_best'] else 'no'} | "
                       + " | ".join("yes" if row.get(peer) else "no" for peer in peers) + " |")
    adapters = reg["adapters"]
    if adapters:
        out += ["", "#### The same optimizer on several backends", "",
                "`identical`: the same regret for every seed; otherwise a two-sided Mann-Whitney U test over seeds "
                "(same if p >= 0.05).", "", "| problem | optimizer | backends | identical | p | same |",
                "|---|---|---|---|---:|---|"]
        for a in adapters:
            out.append(f"| {a['problem']} | {a['optimizer']} | {a['a']} vs {a['b']}"
                       f"{' (as evaluations)' if a.get('as_evaluations') else ''} "
                       f"| {'yes' if a['identical'] else 'no'}"
                       f" | {a['p']:.3f} | {'yes' if a['same'] else '**no**'} |")
        if any(a.get("as_evaluations") for a in adapters):
            out += ["", "*As evaluations*: Ray's BOHB continues a paused trial where hpbandster starts every "
                    "evaluation afresh, so at the same epochs it gets further (its row in the regret table). To "
                    "compare the optimizer itself, its runs are counted as the evaluations hpbandster would have made "
                    "for the same decisions (each rung a trial reached costs that rung's full budget), at the same "
                    "budget."]
    return out


def plot(r: dict[str, Any], path: Path) -> Path | None:
    """Regret box plots per problem (log scale) and the overhead ratios; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    reg = r.get("regret") or {}
    table = reg.get("table") or {}
    names = [p for p in reg.get("problems", {}) if p in table]
    n_panels = len(names) + 1
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 5.5), squeeze=False)
    for ax, p in zip(axes[0], names):
        labels = sorted(table[p], key=lambda k: table[p][k]["median"] if not math.isnan(table[p][k]["median"])
                        else math.inf)
        data = [[max(x, 1e-12) for x in table[p][k]["regrets"].values() if not math.isnan(x)] or [math.nan]
                for k in labels]
        ax.boxplot(data, vert=False, showfliers=True)
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set_xscale("log")
        ax.set_title(f"{p}: simple regret", fontsize=9)
        ax.invert_yaxis()
    ax = axes[0][-1]
    bars = [(f"local {row['what']} {row['trials']}", row["ratio_cpu"]) for row in r.get("local") or []]
    bars += [(f"ray {row['trials']}", row["ratio_wall"]) for row in r.get("ray") or []]
    bars += [(f"bohb {row['trials']}", row["ratio_wall"]) for row in r.get("bohb") or []]
    bars += [(f"parallel {p['backend']}", p["ratio"]) for p in r.get("parallel") or []]
    if bars:
        ax.barh(range(len(bars)), [b[1] for b in bars], color="tab:blue")
        ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.axvline(1.1, color="tab:red", lw=0.8, ls="--")
        ax.invert_yaxis()
    ax.set_title("hposdk / engine (goal <= 1.1)", fontsize=9)
    fig.suptitle(f"hposdk benchmarks, {r['meta']['date']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
