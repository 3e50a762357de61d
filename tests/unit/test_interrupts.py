"""The pieces of a clean stop: the resume command and the exit codes (the real signal: the
integration test `test_interrupt.py`)."""

from __future__ import annotations

import os
import signal

from orchestrator.driver.interrupts import catch_stop, exit_code, resume_command, stop_requested


def test_resume_command_repeats_the_invocation_with_resume_once() -> None:
    assert resume_command(["run", "my sweep.yaml", "--output", "out"]) == (
        "python -m orchestrator 'my sweep.yaml' --output out --resume"
    )
    assert resume_command(["s.yaml", "--resume"]) == "python -m orchestrator s.yaml --resume"


def test_exit_codes_follow_the_shell() -> None:
    assert exit_code(signal.SIGINT) == 130
    assert exit_code(signal.SIGTERM) == 143


def test_sigterm_is_recorded_not_fatal_and_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with catch_stop():
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop_requested() == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
