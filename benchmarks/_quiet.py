"""The check every benchmark runs first: the machine's load, printed, and no figure on a busy one.

A ratio taken while other programs hold the cores measures them, not lvmbench. `quiet_or_exit`
prints the 1-, 5- and 15-minute load averages and the core count and, while the 1-minute load is
above half the cores, exits with status 3 and says so, unless `--force` was given (then the
figures are printed with a warning that they were taken on a busy machine).

    from _quiet import add_force_flag, quiet_or_exit
    add_force_flag(parser); args = parser.parse_args(); quiet_or_exit(args.force)
"""

from __future__ import annotations

import argparse
import os
import sys

BUSY_EXIT = 3


def add_force_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="give figures even while the 1-minute load is above half the cores",
    )


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def quiet_or_exit(force: bool) -> None:
    """Print the load; exit (status 3) while it is above half the cores, unless `force`."""
    one = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    print(f"machine: {load_line()}", flush=True)
    if one <= cores / 2:
        return
    if force:
        print(
            f"warning: --force: the 1-minute load {one:.2f} is above half the cores "
            f"({cores / 2:g}); the figures below are as noisy as this machine",
            flush=True,
        )
        return
    print(
        f"refusing to measure: the 1-minute load is {one:.2f}, above half the {cores} cores "
        f"({cores / 2:g}); other programs would be measured with lvmbench. Wait for a quiet "
        "machine, or pass --force to take noisy figures anyway.",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(BUSY_EXIT)


def ratio_line(name: str, ratios: list[float], target: str) -> str:
    """`name: median x.xxx (spread over N rounds: min-max, IQR a-b; target ...)` of per-round
    ratios: each round measured both sides back to back, so the median of the rounds' ratios is
    the figure and their spread says how far to trust it."""
    import statistics

    s = sorted(ratios)
    if len(s) >= 4:
        q1, _, q3 = statistics.quantiles(s, n=4)
        iqr = f", IQR {q1:.3f}-{q3:.3f}"
    else:
        iqr = ""
    rounds = ", ".join(f"{r:.3f}" for r in ratios)
    return (
        f"{name}: median {statistics.median(s):.3f} (spread over {len(s)} rounds: "
        f"{s[0]:.3f}-{s[-1]:.3f}{iqr}; rounds {rounds}; {target})"
    )
