"""The live table while a sweep runs: 4 significant digits, columns aligned, no `Result logdir`."""

from __future__ import annotations

from orchestrator.driver.live_table import readable

ROW = (
    "| run_trial_1_00000 | RUNNING  | 10.0.0.2:11873 | vit |  5 |  0.883008 |   6.44084 | 0.0003 |"
)


def test_numbers_round_to_four_significant_digits_in_place() -> None:
    out = readable(f"Result logdir: /tmp/ray/session_1/artifacts\n{ROW}")
    assert "Result logdir" not in out
    assert "0.883008" not in out and " 0.883 |" in out
    assert " 6.441 |" in out and "10.0.0.2:11873" in out and "0.0003" in out
    assert len(out) == len(ROW)  # padded: the columns stay where they were
