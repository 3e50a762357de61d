"""The table Ray prints while a sweep runs, made readable: numbers to 4 significant digits
(`0.8830`, not `0.883008`) and without Ray's `Result logdir: ...` line, which repeated the same
temporary path every 15 s (the results are under --output; the summary says where)."""

from __future__ import annotations

import re
from typing import Any

from ray.tune import CLIReporter

DIGITS = 4
_NUMBER = re.compile(r"(?<![\w.\-/:])(-?\d+\.\d+(?:e[-+]?\d+)?)(?![\w.\-/:])")


def round_numbers(text: str, digits: int = DIGITS) -> str:
    """Every decimal number in `text` to `digits` significant digits, padded to its old width so
    the table's columns stay aligned."""

    def short(m: re.Match[str]) -> str:
        old = m.group(1)
        new = f"{float(old):.{digits}g}"
        return new.rjust(len(old)) if len(new) < len(old) else old

    return _NUMBER.sub(short, text)


def readable(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.startswith("Result logdir:")]
    return round_numbers("\n".join(lines))


class LiveTable(CLIReporter):
    """Ray Tune's CLIReporter, its text through `readable`."""

    def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
        self._print(readable(self._progress_str(trials, done, *sys_info)))
