"""`python -m orchestrator`: the command line, one argparse subcommand per job.

    python -m orchestrator run SWEEP.yaml [--address ADDR] [--resume] [--smoke] [--output DIR]
    python -m orchestrator SWEEP.yaml ...          (the same: `run` is the default command)
    python -m orchestrator validate SWEEP.yaml [--smoke]
    python -m orchestrator trial SWEEP.yaml [--stage NAME] [--index N] [--smoke]   (one trial, no Ray)
    python -m orchestrator train --model vit --batch_size 128 --lr 1e-3 --epochs 50 --phase 1 --device cpu
    python -m orchestrator report DIR [--out report.html] [--static] [--group-by KEY]
    python -m orchestrator compare A B [--threshold 5%] [--metric M] [--fail-on regression]
                                       [--json] [--html out.html]   (A, B: DIR or DIR:SWEEP)
    python -m orchestrator models [PATTERN] [--json]     (aliases, timm and hf/ names; params, GMACs)

Exit codes: 0 all trials finished; 1 some trial failed (the sweep still ran to the end);
2 bad input (nothing written).

The parser is built here and only here, with no torch, timm or Ray import, so `--help` and bad
flags answer at once; each command's work is imported when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from orchestrator.driver.schema import SweepConfig, SweepError

EXIT_OK, EXIT_TRIAL_FAILED, EXIT_BAD_INPUT = 0, 1, 2
PROG = "python -m orchestrator"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run sweeps of vision-model trials on Ray Tune, profiled (time, memory, "
        "FLOPs, latency) beside accuracy, into MLflow and Parquet. "
        f"`{PROG} SWEEP.yaml` is short for `{PROG} run SWEEP.yaml`.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run(sub.add_parser("run", help="run a sweep (the default command)"))
    _add_validate(sub.add_parser("validate", help="check a sweep file and list its trials"))
    _add_trial(sub.add_parser("trial", help="run one trial of a sweep in this process, no Ray"))
    _add_train(sub.add_parser("train", help="one trial with the seed's train.py flags"))
    _add_report(sub.add_parser("report", help="the Parquet tables -> one HTML report"))
    _add_models(sub.add_parser("models", help="model names and aliases, params, GMACs"))
    _add_compare(sub.add_parser("compare", help="two sweeps side by side, with verdicts"))
    return p


def _add_run(p: argparse.ArgumentParser) -> None:
    p.description = "Run a sweep of trials on Ray Tune into MLflow and Parquet."
    p.add_argument("sweep", type=Path, help="sweep file (YAML)")
    p.add_argument("--output", type=Path, default=Path("results"), help="results dir (results/)")
    p.add_argument("--address", default=None, help="join a Ray cluster (or set RAY_ADDRESS)")
    p.add_argument(
        "--storage",
        default=None,
        help="Ray Tune's checkpoints and experiment state: a path every node shares, or a URI "
        "pyarrow/fsspec opens (s3://, gs://, ...); default <output>/_tune",
    )
    p.add_argument("--resume", action="store_true", help="continue the last interrupted run")
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume: run the trials that errored again, under their own trial id, from "
        "their last checkpoint if they saved one (finished ones stay as they are)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="one epoch, few small batches: proves it runs (swaps unreachable weights/data, says so)",
    )
    p.add_argument(
        "--no-pretrained",
        action="store_true",
        help="where hub weights are unreachable, train from random init (recorded in the rows)",
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: the sweep's mlflow.tracking_uri, else "
        "$MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns/mlflow.db)",
    )
    p.add_argument("--quiet", action="store_true", help="no live trial table")
    p.add_argument("--report", action="store_true", help="write <output>/report.html at the end")
    p.set_defaults(handler=_run)


def _add_validate(p: argparse.ArgumentParser) -> None:
    p.description = "Validate a sweep file (every stage) and print the trials it expands to."
    p.add_argument("sweep", type=Path, help="sweep file (YAML)")
    p.add_argument("--smoke", action="store_true", help="validate it as --smoke would run it")
    p.add_argument(
        "--no-pretrained", action="store_true", help="validate it as --no-pretrained would run it"
    )
    p.set_defaults(handler=_validate)


def _add_trial(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run one trial of a sweep in this process, without Ray (debugging, pdb, machines "
        "without Ray); its rows go to Parquet (and MLflow when importable)."
    )
    p.add_argument("sweep", type=Path, help="sweep file (YAML)")
    p.add_argument("--stage", default=None, help="stage name (default: the first stage)")
    p.add_argument(
        "--index",
        type=int,
        nargs="+",
        default=[0],
        help="trial number(s), as `validate` lists them; several run one after another",
    )
    p.add_argument("--output", type=Path, default=Path("results"), help="results dir (results/)")
    p.add_argument("--smoke", action="store_true", help="shrink the trial as --smoke does")
    p.add_argument(
        "--no-pretrained", action="store_true", help="random init where hub weights are unreachable"
    )
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (when importable)")
    p.add_argument("--pdb", action="store_true", help="post-mortem debugger if the trial fails")
    p.set_defaults(handler=_trial)


def _add_train(p: argparse.ArgumentParser) -> None:
    p.description = (
        "One trial with the flags of the seed's train.py (phase 1 = train, 2 = finetune)."
    )
    p.add_argument("--model", default="vit", help="vit, deit, swin, resnet, ... or any timm name")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--phase", type=int, choices=(1, 2), default=1, help="1 pretrain, 2 fine-tune")
    p.add_argument("--device", choices=("cuda", "cpu", "mps", "auto"), default="auto")
    p.add_argument("--dataset", default="cifar100", help="digits, cifar10, cifar100, ...")
    p.add_argument("--data_root", default="data")
    p.add_argument("--img_size", type=int, default=224)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    p.add_argument("--checkpoint", default=None, help="phase 2: weights to start from")
    p.add_argument("--pretrained", action="store_true", help="start from the hub's weights")
    p.add_argument("--output_dir", type=Path, default=Path("results"), help="results dir")
    p.add_argument("--name", default=None, help="sweep/experiment name")
    p.set_defaults(handler=_train)


def _add_report(p: argparse.ArgumentParser) -> None:
    p.description = "Turn the Parquet tables of one or more sweeps into one HTML report."
    p.add_argument("results_dir", metavar="DIR", help="a sweep's --output directory")
    p.add_argument("--out", default=None, help="HTML file to write (default: DIR/report.html)")
    p.add_argument(
        "--static",
        action="store_true",
        help="every figure as a matplotlib PNG (for papers), no interactive plotly figures",
    )
    p.add_argument(
        "--group-by",
        default=None,
        metavar="KEY[,KEY]",
        help="keys whose trials are pooled as repeats into one group (default: seed)",
    )
    p.set_defaults(handler=_report)


def _add_compare(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compare two sweeps: trials matched by searched parameters, model, dataset and "
        "trainable (seeds pooled); B/A ratios of cost metrics, differences of accuracy and F1, "
        "each with a verdict (regression / improvement / within noise). Method: docs/report.md."
    )
    p.add_argument("a", metavar="A", help="the reference: an output folder, or FOLDER:SWEEP")
    p.add_argument("b", metavar="B", help="the candidate: an output folder, or FOLDER:SWEEP")
    p.add_argument(
        "--threshold",
        default="5%",
        help="smallest change that counts, relative (5%% or 0.05; default 5%%)",
    )
    p.add_argument(
        "--metric",
        action="append",
        default=None,
        help="only metrics whose name contains this (repeatable)",
    )
    p.add_argument("--group-by", default=None, metavar="KEY[,KEY]", help="pooled keys (seed)")
    p.add_argument(
        "--fail-on",
        choices=("regression",),
        default=None,
        help="exit 1 when any verdict is a regression (for CI)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--html", default=None, metavar="OUT.html", help="also write a compare page")
    p.set_defaults(handler=_compare)


def _add_models(p: argparse.ArgumentParser) -> None:
    p.description = (
        "List model aliases, and timm / cached hf/ names matching PATTERN, with parameters and "
        "forward GMACs at the default input size."
    )
    p.add_argument("pattern", nargs="?", default=None, help="e.g. vit, 'swin*', hf/google")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument(
        "--limit", type=int, default=10, help="count figures for at most N non-alias matches"
    )
    p.add_argument("--img-size", type=int, default=None, help="count at this size instead")
    p.add_argument("--no-figures", action="store_true", help="names only (fast)")
    p.add_argument("--refresh", action="store_true", help="count again, ignoring the cache")
    p.set_defaults(handler=_models)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"run", "validate", "trial", "train", "report", "models", "compare"}
    if argv and argv[0] not in commands and not argv[0].startswith("-"):
        argv = ["run", *argv]  # `python -m orchestrator SWEEP.yaml`
    args = build_parser().parse_args(argv)
    return args.handler(args)


def entry() -> int:
    """`python -m orchestrator`: `main`, the end of the Ray session it started, the process's end."""
    code = main()
    if sys.modules.get("ray") is not None:  # (None: made unimportable, as tests do)
        # Faster than Ray's own exit hook (`shutdown_ray`).
        from orchestrator.driver.sweep_runner import shutdown_ray

        shutdown_ray()
    end_process(code)
    return code


def end_process(code: int) -> None:
    """Exit now: the exit hooks run and the streams are flushed, but the interpreter does not tear
    down, one by one, the ~3,000 modules a sweep's driver imports (~0.7 s of every command, from
    `benchmarks/startup.py`); everything the command writes is closed by the time it returns.
    Where CPython's `atexit._run_exitfuncs` is missing, or a non-daemon thread is still running,
    the ordinary exit."""
    import atexit
    import logging
    import threading

    run_hooks = getattr(atexit, "_run_exitfuncs", None)
    main_thread = threading.main_thread()
    if run_hooks is None or any(
        t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main_thread
    ):
        return  # a thread still at work (the interpreter joins it), or no hooks to run by hand
    run_hooks()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe (`... | head`) or stream has nothing left to flush.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code if isinstance(code, int) else 0)


def _run(args: argparse.Namespace) -> int:
    if args.retry_failed and not args.resume:
        print(
            "error: --retry-failed re-runs the errored trials of an earlier run: add --resume",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    try:
        sweep, text = _load(args.sweep, smoke=args.smoke)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return execute(sweep, text, args)


def _load(path: Path, *, smoke: bool) -> tuple[SweepConfig, str]:
    from orchestrator.driver.schema import load_sweep
    from orchestrator.driver.smoke import apply_smoke

    sweep = load_sweep(path)
    return (apply_smoke(sweep) if smoke else sweep), path.read_text(encoding="utf-8")


def execute(sweep: SweepConfig, sweep_text: str, args: argparse.Namespace) -> int:
    """Build the run plan once (its stages, or the sweep alone), run it, print one summary.

    Ctrl-C / SIGTERM stop it cleanly (`orchestrator.driver.interrupts`): exit 130 / 143, and the
    last line printed is the command that resumes it.
    """
    from orchestrator.driver.interrupts import catch_stop, exit_code, resume_command
    from orchestrator.driver.offline import check_offline
    from orchestrator.driver.preflight import check_plan as check_resources
    from orchestrator.driver.run_summary import print_run_summary
    from orchestrator.driver.stages import build_plan, run_plan

    output: Path = args.output
    no_pretrained = bool(getattr(args, "no_pretrained", False))

    def adjust(s: SweepConfig) -> SweepConfig:
        return check_offline(s, swap_weights=no_pretrained or s.smoke, swap_data=s.smoke)

    source = str(getattr(args, "sweep", None) or sweep.name)
    try:
        plan = build_plan(sweep, source=source, adjust=adjust)
        check_resources(plan, address=args.address)  # every stage, before Ray or a file
        check_plan(plan)
        with catch_stop():
            outcomes = run_plan(
                plan,
                output=output,
                sweep_text=sweep_text,
                address=args.address,
                resume=args.resume,
                tracking_uri=args.tracking_uri,
                verbose=0 if args.quiet else 1,
                storage=getattr(args, "storage", None),
                retry_failed=bool(getattr(args, "retry_failed", False)),
            )
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    stopped = next((o.stopped_by for o in outcomes if o.stopped_by is not None), None)
    print_run_summary(plan, outcomes, output.resolve(), tracking_uri=args.tracking_uri)
    if getattr(args, "report", False) and stopped is None:
        from orchestrator.report import build_report
        from orchestrator.sinks.mlflow_runs import default_tracking_uri, tag_runs

        report = build_report(output.resolve())
        uri = args.tracking_uri or sweep.mlflow.tracking_uri or default_tracking_uri()
        tag_runs(uri, [o.parent_run_id for o in outcomes], {"lvmbench.report": str(report)})
        print(f"report:  {report}")
    if stopped is not None:
        print("stopped; continue with:", flush=True)
        print(resume_command(), flush=True)
        return exit_code(stopped)
    return EXIT_TRIAL_FAILED if any(o.errors for o in outcomes) else EXIT_OK


def check_plan(plan: list[Any]) -> None:
    """The checks a trial would fail on, done once on the driver (SweepError, exit 2)."""
    from orchestrator.driver.lora_targets import check_stage

    for stage in plan:
        check_stage(stage.sweep)


def _validate(args: argparse.Namespace) -> int:
    """The run's own checks (schema, stages, offline pre-flight, LoRA targets), without Ray."""
    from orchestrator.driver.offline import check_offline
    from orchestrator.driver.stages import build_plan

    no_pretrained = bool(getattr(args, "no_pretrained", False))

    def adjust(s: SweepConfig) -> SweepConfig:
        return check_offline(s, swap_weights=no_pretrained or s.smoke, swap_data=s.smoke)

    try:
        sweep, _ = _load(args.sweep, smoke=args.smoke)
        plan = build_plan(sweep, source=str(args.sweep), adjust=adjust)
        check_plan(plan)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for stage in plan:
        if stage.name is not None:
            origin = f", from stage {stage.source.stage!r}" if stage.source else ""
            print(f"== stage {stage.name!r}{origin}")
        _print_trials(stage.sweep)
    return EXIT_OK


def _print_trials(sweep: SweepConfig) -> None:
    from orchestrator.driver.search_space import expand

    trials = expand(sweep)
    searched = {"model", "model.name"} & set(sweep.search)
    model = "(searched)" if searched else sweep.model.name
    # A bench stage times steps at each batch size; it runs no epochs.
    length = "" if sweep.trainable == "bench" else f"{sweep.optim.epochs} epoch(s), "
    print(
        f"sweep {sweep.name!r}: trainable {sweep.trainable}, model {model}, "
        f"dataset {sweep.dataset.name}, {length}"
        f"{len(trials)} trial(s){' (smoke)' if sweep.smoke else ''}"
    )
    keys = [k for k in trials[0] if k != "sample"] if trials else []
    header = ["#", "sample", *keys]
    rows = [[str(i), str(t["sample"]), *(str(t[k]) for k in keys)] for i, t in enumerate(trials)]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))


def _train(args: argparse.Namespace) -> int:
    """The seed's train.py flags, as a one-trial sweep."""
    from orchestrator.driver.schema import validate_sweep_dict

    trainable = "train" if args.phase == 1 else "finetune"
    data: dict[str, Any] = {
        "name": args.name or f"{args.model}_phase{args.phase}",
        "trainable": trainable,
        "model": {"name": args.model, "img_size": args.img_size, "pretrained": args.pretrained},
        "dataset": {"name": args.dataset, "root": args.data_root},
        "optim": {"batch_size": args.batch_size, "lr": args.lr, "epochs": args.epochs},
        "device": args.device,
        "precision": args.precision,
        "resources": {"cpu": 1, "gpu": 1 if args.device == "cuda" else 0},
    }
    if args.checkpoint:
        data["finetune"] = {"checkpoint": args.checkpoint}
    try:
        sweep = validate_sweep_dict(data, source="train flags")
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    import yaml

    run_args = argparse.Namespace(
        output=args.output_dir,
        address=None,
        resume=False,
        tracking_uri=None,
        quiet=False,
        report=False,
        no_pretrained=False,
    )
    return execute(sweep, yaml.safe_dump(data, sort_keys=False), run_args)


def _trial(args: argparse.Namespace) -> int:
    from orchestrator.driver.single_trial import run

    return run(args)


def _report(args: argparse.Namespace) -> int:
    from orchestrator.report import run

    return run(args)


def _compare(args: argparse.Namespace) -> int:
    from orchestrator.report.compare import run

    return run(args)


def _models(args: argparse.Namespace) -> int:
    from orchestrator.driver.models_command import run

    return run(args)
