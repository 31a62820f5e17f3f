"""The ``hposdk`` command line: run a study from YAML, show or plot a study, list backends.

Errors a user can cause print one clear message (exit code 2), never a traceback; a study that ran
but completed no trial exits with code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .exceptions import HposdkError

EXIT_NO_COMPLETED = 1  # the study ran, but no trial completed: a batch job must not report success
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _importable_from(directory: str) -> None:
    """Let ``objective: module:function`` name a module beside the study file (as ``python`` would),
    here and in the worker processes and Ray workers this run starts (they inherit PYTHONPATH)."""
    import os

    path = os.path.abspath(directory)
    if path not in sys.path:
        sys.path.insert(0, path)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if path not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([path, *parts])


def _cmd_run(args: argparse.Namespace) -> int:
    import os

    from .study import Study

    _importable_from(os.path.dirname(args.study) or ".")

    overrides: dict[str, Any] = {}
    for key in ("backend", "optimizer", "n_trials", "max_concurrent", "name", "storage", "seed"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    progress: bool | str = False if args.no_progress else "auto"
    study = Study.from_yaml(args.study, progress=progress, **overrides)
    if args.fresh:
        study.resume = False
    print(f"Study {study.name!r}: backend={study.config.backend}, optimizer={study.config.optimizer}, "
          f"n_trials={study.n_trials}, max_concurrent={study.config.max_concurrent}, record={study.record_path}",
          file=sys.stderr)
    if study.optimizer_choice is not None:
        print(f"optimizer=auto chose {study.optimizer_choice.describe()}", file=sys.stderr)
    try:
        result = study.optimize()
    except KeyboardInterrupt:
        print(f"Interrupted. Resume with: hposdk run {args.study}" + (" (same --name)" if args.name else ""),
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.table(limit=args.top))
    print()
    print(result.summary())
    if args.output:
        _export(result, args.output)
    if args.plot:
        print(f"wrote {result.plot_history(args.plot)}", file=sys.stderr)
    if result.trials and not result.completed:
        print(f"hposdk: error: no trial of study {result.name!r} completed ({result.summary_line()}); "
              "see the errors above, or `hposdk show` the study", file=sys.stderr)
        return EXIT_NO_COMPLETED
    return 0


def _export(result: Any, path: str) -> None:
    if path.endswith(".csv"):
        result.to_csv(path)
    else:
        result.to_json(path, indent=2)
    print(f"wrote {path}", file=sys.stderr)


def _cmd_show(args: argparse.Namespace) -> int:
    from .study import load_study

    result = load_study(args.study, storage=args.storage)
    if args.format == "json":
        print(result.to_json(indent=2))
    elif args.format == "csv":
        import csv

        rows = result.rows()
        columns: list[str] = []
        for r in rows:
            columns.extend(c for c in r if c not in columns)
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(result.table(limit=args.limit))
        print()
        print(result.summary())
        lost = result.info.get("running_or_lost")
        if lost:
            print(f"Unfinished trials (running, or lost in a crash; rerun to resume): {lost}")
    return 0


def backend_rows() -> list[dict[str, Any]]:
    """Every registered backend and, when its engine is installed, its capabilities as data.

    The source of ``hposdk backends`` (text, ``--json``, ``--markdown``) and of the backends table
    in the docs and README (``docs/gen_backends.py``), so the three never disagree.
    """
    from .backends._registry import available_backends, get_backend

    rows = []
    for name, entry in sorted(available_backends().items()):
        row: dict[str, Any] = {"backend": name, "description": entry.description, "extra": entry.extra}
        try:
            cls = get_backend(name)
        except HposdkError as exc:
            row.update(installed=False, hint=str(exc).split("Make sure to ")[-1])
        else:
            caps = cls.capabilities
            row.update(installed=True, optimizers=list(caps.optimizers), pruners=list(caps.pruners),
                       budget_optimizers=list(caps.budget_optimizers), space_features=list(caps.space_features),
                       multi_objective=list(caps.multi_objective), constraint_aware=list(caps.constraint_aware),
                       parallel=caps.parallel,
                       resume=caps.resume, options_model=cls.options_model.__name__,
                       options=list(cls.options_model.model_fields), notes=caps.notes)
        rows.append(row)
    return rows


def backends_markdown(rows: list[dict[str, Any]]) -> str:
    """The backends table as Markdown (one row per backend; uninstalled ones say how to install)."""
    def code(items: list[str]) -> str:
        return ", ".join(f"`{i}`" for i in items) or "-"

    def features(items: list[str]) -> str:
        from .backends._base import SPACE_FEATURES

        return "all (exact)" if set(items) >= set(SPACE_FEATURES) else code(items)

    def options(items: list[str]) -> str:
        # The full list is in `hposdk backends` and on each backend's page; keep the table readable.
        return code(items) if len(items) <= 6 else f"{code(items[:5])}, ... ({len(items)} in all)"

    lines = ["| backend | install | optimizers | budget optimizers | several objectives | pruners / schedulers "
             "| parameter types | `backend_options` |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        install = f"`pip install hposdk[{r['extra']}]`" if r["extra"] else "included"
        if not r["installed"]:
            lines.append(f"| `{r['backend']}` | {install} | (not installed here) | | | | | |")
            continue
        lines.append(f"| `{r['backend']}` | {install} | {code(r['optimizers'])} | {code(r['budget_optimizers'])} "
                     f"| {code(r['multi_objective'])} | {code(r['pruners'])} | {features(r['space_features'])} "
                     f"| {options(r['options'])} |")
    return "\n".join(lines)


def _cmd_backends(args: argparse.Namespace) -> int:
    rows = backend_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if args.markdown:
        print(backends_markdown(rows))
        return 0
    for r in rows:
        if r["installed"]:
            print(f"{r['backend']:<9} {r['description']}")
            print(f"{'':<9} optimizers: {', '.join(r['optimizers'])}"
                  + (f" (budget-aware: {', '.join(r['budget_optimizers'])})" if r["budget_optimizers"] else ""))
            print(f"{'':<9} pruners/schedulers: {', '.join(r['pruners']) or '-'}")
            print(f"{'':<9} parameter types (translated exactly): {', '.join(r['space_features'])}")
            print(f"{'':<9} backend_options ({r['options_model']}): {', '.join(r['options']) or '-'}")
            if r["notes"]:
                print(f"{'':<9} notes: {r['notes']}")
        else:
            print(f"{r['backend']:<9} not installed: {r['hint']}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .exceptions import ConfigError
    from .plotting import PLOT_KINDS
    from .study import load_study

    result = load_study(args.study, storage=args.storage)
    output = args.output or (f"{result.name}-report.html" if args.kind == "all" else f"{result.name}-{args.kind}.png")
    if output.lower().endswith((".html", ".htm")):
        path = result.write_report(output)  # the report holds every kind
    elif args.kind == "all":
        raise ConfigError(f"--kind all writes an HTML report, but -o is {output!r}. Fix: use -o report.html "
                          "or pick one of --kind " + "|".join(PLOT_KINDS))
    else:
        path = PLOT_KINDS[args.kind](result, output)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _cmd_slurm(args: argparse.Namespace) -> int:
    from .backends._slurm import write_slurm_script

    path = write_slurm_script(args.output, args.study, nodes=args.nodes, cpus_per_node=args.cpus_per_node,
                              gpus_per_node=args.gpus_per_node, time=args.time, partition=args.partition,
                              account=args.account, port=args.port, setup=args.setup)
    print(f"wrote {path}; submit it with: sbatch {path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="hposdk", description="Hyperparameter optimisation on any backend.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or resume) a study described by a YAML file")
    run.add_argument("study", help="the study YAML file")
    run.add_argument("--backend", help="override the backend (local, ray, clearml, ...)")
    run.add_argument("--optimizer", help="override the optimizer (grid, random, tpe, ...)")
    run.add_argument("--n-trials", type=int, dest="n_trials", help="override n_trials")
    run.add_argument("--max-concurrent", type=int, dest="max_concurrent", help="override max_concurrent")
    run.add_argument("--name", help="override the study name (a new name starts a new study)")
    run.add_argument("--storage", help="directory of study records (default ./hposdk-studies)")
    run.add_argument("--seed", type=int, help="override the seed")
    run.add_argument("--fresh", action="store_true", help="start over instead of resuming (old record kept aside)")
    run.add_argument("--no-progress", action="store_true", help="no live progress display")
    run.add_argument("--top", type=int, default=10, help="rows of the final table (default 10)")
    run.add_argument("-o", "--output", help="also export the result (.json or .csv)")
    run.add_argument("--plot", help="also write the optimisation history plot (.png, .svg or .pdf)")
    run.set_defaults(func=_cmd_run)

    show = sub.add_parser("show", help="print a study's trials and best trial")
    show.add_argument("study", help="study name, directory or study.jsonl path")
    show.add_argument("--storage", help="directory of study records (default ./hposdk-studies)")
    show.add_argument("--limit", type=int, help="show at most this many trials (best first)")
    show.add_argument("--format", choices=["table", "json", "csv"], default="table")
    show.set_defaults(func=_cmd_show)

    backends = sub.add_parser("backends", help="list backends, their optimizers and pruners")
    backends.add_argument("--json", action="store_true", help="machine-readable output")
    backends.add_argument("--markdown", action="store_true", help="a Markdown table (the one in the docs)")
    backends.set_defaults(func=_cmd_backends)

    plot = sub.add_parser("plot", help="plot a study (PNG/SVG/PDF) or write a self-contained HTML report")
    plot.add_argument("study", help="study name, directory or study.jsonl path")
    plot.add_argument("--storage", help="directory of study records (default ./hposdk-studies)")
    plot.add_argument("--kind", choices=["history", "parallel", "importance", "curves", "all"], default="all",
                      help="what to draw (default all: an HTML report)")
    plot.add_argument("-o", "--output", help="the file to write; .html writes the report "
                      "(default <study>-<kind>.png, or <study>-report.html for all)")
    plot.set_defaults(func=_cmd_plot)

    slurm = sub.add_parser("slurm", help="write a Slurm batch script: a Ray cluster over the nodes, the study on it")
    slurm.add_argument("study", help="the study YAML file")
    slurm.add_argument("--nodes", type=int, default=1, help="nodes (the first runs the Ray head)")
    slurm.add_argument("--cpus-per-node", type=int, default=1, dest="cpus_per_node")
    slurm.add_argument("--gpus-per-node", type=int, default=0, dest="gpus_per_node")
    slurm.add_argument("--time", default="01:00:00", help="wall-time limit (default 01:00:00)")
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--port", type=int, default=6379, help="the Ray head's port (default 6379)")
    slurm.add_argument("--setup", action="append", help="a shell line run first (module load ...); repeatable")
    slurm.add_argument("-o", "--output", default="slurm_hpo.sh", help="the script to write (default slurm_hpo.sh)")
    slurm.set_defaults(func=_cmd_slurm)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hposdk`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except HposdkError as exc:
        print(f"hposdk: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
