"""Ctrl-C and SIGTERM stop a sweep cleanly: trials end, the sinks flush, the process says how to resume.

Ray Tune's own SIGINT handler stops `Tuner.fit()` gracefully (it saves the experiment state, stops
the running trials and calls the callbacks' `on_experiment_end`, which ends their MLflow runs as
KILLED), but `fit()` then returns as if the sweep had finished, and Ray catches neither SIGTERM nor
which signal came. So lvmbench catches both itself (`catch_stop`), records which, and hands the
stop to Tune through the SIGUSR1 handler Tune installs beside its SIGINT one
(`TUNE_DISABLE_SIGINT_HANDLER=1` keeps Tune off SIGINT). A second signal stops at once
(KeyboardInterrupt). The CLI then skips later stages, prints the summary (pending trials counted)
and, last, the exact `--resume` command, and exits 128 + the signal (130 SIGINT, 143 SIGTERM).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_CAUGHT = (signal.SIGINT, signal.SIGTERM)
_stop_signal: int | None = None


def stop_requested() -> int | None:
    """The signal number that asked the sweep to stop, or None."""
    return _stop_signal


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _stop_signal
    if _stop_signal is not None:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the clean end
    _stop_signal = signum
    print(
        f"\n{signal.Signals(signum).name}: stopping the sweep (running trials end, results are "
        "kept); send it again to stop at once",
        file=sys.stderr,
        flush=True,
    )
    if hasattr(signal, "SIGUSR1"):
        # Tune's handler (installed while `fit()` runs) ends the run loop; outside `fit()`, ours
        # below ignores it and the runner checks `stop_requested()` before the next stage.
        os.kill(os.getpid(), signal.SIGUSR1)


@contextmanager
def catch_stop() -> Iterator[None]:
    """Within: SIGINT/SIGTERM record themselves and stop Tune's loop; restored on exit."""
    global _stop_signal
    _stop_signal = None
    if sys.platform == "win32" or not _in_main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in (*_CAUGHT, signal.SIGUSR1)}
    env_before = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for s in _CAUGHT:
        signal.signal(s, _on_signal)
    # SIGUSR1's default action would kill the process when it arrives outside `fit()`.
    signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        if env_before is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = env_before


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that continues this run: this invocation's arguments plus `--resume`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run":
        args = args[1:]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["python", "-m", "orchestrator", *args])
