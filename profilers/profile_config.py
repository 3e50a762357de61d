"""Configuration of the profilers: the `profilers:` section of a sweep file.

Lives with the profilers (not the trainables) because profilers import nothing from the rest of
lvmbench; the trial config composes it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LatencyProfilerConfig(Strict):
    input_sizes: list[int] | None = Field(None, description="None = the model's img_size")
    batch_sizes: list[int] = Field(
        default_factory=lambda: [1, 32], description="batch sizes timed (1 = per-instance latency)"
    )
    precisions: list[Literal["fp32", "fp16", "bf16"]] | None = Field(
        None, description="None = the trial's precision"
    )
    warmup: int = Field(5, ge=0, description="untimed forwards before each point")
    repeats: int = Field(30, ge=3, description="timed forwards per point (at most)")
    max_point_s: float | None = Field(
        10.0,
        gt=0,
        description="stop a point's repeats (at no fewer than 3) after this many seconds",
    )
    exclusive: bool = Field(True, description="hold the device's lock while timing")


class FlopsProfilerConfig(Strict):
    input_sizes: list[int] | None = Field(None, description="None = the model's img_size")
    train_step: bool = Field(True, description="also count forward + backward")


class EmptyProfilerConfig(Strict):
    pass


class TimeProfilerConfig(Strict):
    peak_tflops: float | Literal["measure"] | None = Field(
        None,
        description="device peak TFLOP/s for MFU: a number, `measure` (a dense-matmul probe in the "
        "trial's precision and threads), or None (known devices' data sheets, else measure)",
    )

    @field_validator("peak_tflops")
    @classmethod
    def _positive(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, int | float) and value <= 0:
            raise ValueError(f"profilers.time.peak_tflops: {value} must be > 0, `measure` or null")
        return value


class ProfilersConfig(Strict):
    """Each profiler is on with its defaults; `null` or `false` switches it off."""

    params: EmptyProfilerConfig | None = Field(default_factory=EmptyProfilerConfig)
    flops: FlopsProfilerConfig | None = Field(default_factory=FlopsProfilerConfig)
    latency: LatencyProfilerConfig | None = Field(default_factory=LatencyProfilerConfig)
    memory: EmptyProfilerConfig | None = Field(default_factory=EmptyProfilerConfig)
    time: TimeProfilerConfig | None = Field(default_factory=TimeProfilerConfig)

    @model_validator(mode="before")
    @classmethod
    def _false_means_off(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: (None if v is False else v) for k, v in data.items()}
        return data
