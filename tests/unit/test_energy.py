"""Energy: RAPL on a fake powercap tree (wrap-around included); nulls with a reason, never fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from profilers.energy import (
    EnergyMeter,
    delta_j,
    epoch_energy,
    meter_for,
    rapl_counters,
    trial_energy,
)


def _zone(root: Path, name: str, energy_uj: int, span_uj: int, label: str) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{span_uj}\n")
    (zone / "name").write_text(f"{label}\n")
    return zone


def test_rapl_joules_are_the_counter_difference_with_wrap_around(tmp_path: Path) -> None:
    span = 262_143_328_850  # a real package's max_energy_range_uj
    p0 = _zone(tmp_path, "intel-rapl:0", span - 2_000_000, span, "package-0")  # 2 J before wrap
    p1 = _zone(tmp_path, "intel-rapl:1", 10_000_000, span, "package-1")
    # A sub-zone (dram / core) is part of a package's neighbourhood: never added on top.
    _zone(tmp_path, "intel-rapl:0:0", 5, span, "core")
    counters, reason = rapl_counters(tmp_path)
    assert reason is None
    meter = EnergyMeter(counters)
    assert meter.source == "rapl:package-0+rapl:package-1"
    before = meter.reading()
    (p0 / "energy_uj").write_text("3000000\n")  # wrapped: 2 J to the top, then 3 J
    (p1 / "energy_uj").write_text("17500000\n")  # 7.5 J
    assert meter.joules_since(before) == pytest.approx(2.0 + 3.0 + 7.5)
    facts = trial_energy(meter, meter.reading())
    assert facts["energy/trial_j"] == pytest.approx(0.0)
    assert facts["energy/reason"] is None and facts["energy/source"] == meter.source


def test_delta_without_a_wrap_range_refuses_a_backwards_counter() -> None:
    assert delta_j(1.0, 4.5, None) == 3.5
    assert delta_j(9.0, 1.0, 10.0) == 2.0
    with pytest.raises(ValueError, match="went back"):
        delta_j(9.0, 1.0, None)


def test_no_powercap_gives_nulls_and_a_reason(tmp_path: Path) -> None:
    counters, reason = rapl_counters(tmp_path / "absent")
    assert counters == [] and "no " in str(reason)
    meter = EnergyMeter(counters, reason)
    facts = trial_energy(meter, meter.reading())
    assert facts == {"energy/trial_j": None, "energy/source": None, "energy/reason": reason}


def test_an_unreadable_counter_is_a_reason_not_an_error(tmp_path: Path) -> None:
    zone = _zone(tmp_path, "intel-rapl:0", 1, 100, "package-0")
    (zone / "energy_uj").chmod(0)
    try:
        if _readable(zone / "energy_uj"):
            pytest.skip("running as root: every file is readable")
        counters, reason = rapl_counters(tmp_path)
        assert counters == [] and "not readable" in str(reason)
    finally:
        (zone / "energy_uj").chmod(0o644)


def _readable(path: Path) -> bool:
    try:
        path.read_text()
    except OSError:
        return False
    return True


def test_a_counter_that_fails_mid_trial_turns_null() -> None:
    calls = iter([1.0])

    def read() -> float:
        return next(calls)  # StopIteration on the second read: the counter vanished

    from profilers.energy import Counter

    meter = EnergyMeter([Counter("fake", read)])
    before = meter.reading()
    assert meter.joules_since(before) is None
    assert "read failed" in str(meter.why_null())


def test_epoch_figures_per_sample() -> None:
    got = epoch_energy(
        {"energy/train_j": 30.0, "energy/eval_j": 5.0, "train/samples": 60, "val/samples": 10}
    )
    assert got == {
        "energy/epoch_j": 35.0,
        "energy/train_j_per_sample": 0.5,
        "energy/infer_j_per_sample": 0.5,
    }
    assert set(epoch_energy({"energy/train_j": None}).values()) == {None}


def test_this_machine_says_why_when_it_has_no_counter() -> None:
    meter = meter_for("cpu")
    if meter.counters:
        pytest.skip("this machine has a readable RAPL counter")
    assert meter.why_null()
