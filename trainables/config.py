"""The configuration of one trial: every key of a sweep file except the sweep-level ones.

The orchestrator validates sweep files against these models (extended in
`orchestrator/driver/schema.py` with `search`, `resources`, `stages`, ...) and hands each trial a
plain dict; the trainable validates it again with `TrialConfig.model_validate`. Every key has a
default; unknown keys are errors (`extra="forbid"`), so a typo never passes silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from profilers.profile_config import ProfilersConfig
from trainables.registry import DATASETS, TRAINABLES

TRAINABLE_NAMES = tuple(TRAINABLES)
DATASET_NAMES = tuple(DATASETS)
# Datasets whose images fit in memory as one tensor: the ones `dataset.on_device` accepts.
IN_MEMORY_DATASETS = ("digits", "cifar10", "cifar100", "synthetic")
Precision = Literal["auto", "fp32", "fp16", "bf16"]
Device = Literal["auto", "cpu", "cuda", "mps"]


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CompileConfig(Strict):
    """`model.compile: {mode, backend}`: the options passed to torch.compile."""

    mode: (
        Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None
    ) = Field(None, description="torch.compile mode (None = torch's default)")
    backend: str = Field("inductor", description="torch.compile backend (inductor, eager, ...)")


class ModelConfig(Strict):
    name: str = Field(
        "resnet18",
        description="timm name, `torchvision/<name>`, `hf/<repo id>`, `hf:<local path>`, or an alias",
    )
    pretrained: bool | str = Field(
        False, description="true (hub weights), false (random init) or a local checkpoint path"
    )
    img_size: int = Field(32, ge=8, le=4096, description="input side length in pixels")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for the model constructor"
    )
    channels_last: bool = Field(False, description="convert model and inputs to channels_last")
    compile: bool | CompileConfig = Field(
        False, description="torch.compile the model: true/false, or {mode, backend}"
    )
    attention: Literal["auto", "fused", "plain"] = Field(
        "auto",
        description="timm attention: fused F.scaled_dot_product_attention, the plain matmul-softmax "
        "path, or the model's default (auto); no effect on models without timm attention",
    )
    patch_size: int | None = Field(
        None, ge=1, description="ViT/DeiT/Swin patch side (None = the name's); img_size must divide"
    )
    init_values: float | None = Field(
        None, ge=0, description="ViT-family LayerScale init (0 = no LayerScale; None = the model's)"
    )
    drop_path_rate: float | None = Field(
        None, ge=0, lt=1, description="ViT-family/Swin stochastic depth rate (None = the model's)"
    )
    drop_path_schedule: Literal["auto", "linear", "constant"] = Field(
        "auto",
        description="DropPath per block: timm's linear ramp to drop_path_rate, the same rate in "
        "every block (seed 003), or the alias's own (auto)",
    )
    attn_drop_rate: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="ViT-family/Swin dropout on attention weights (None = the model's)",
    )
    proj_drop_rate: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="ViT-family/Swin dropout after the attention and MLP projections (None = the model's)",
    )

    def compile_options(self) -> dict[str, Any] | None:
        """Keyword arguments for torch.compile, or None when the model is not compiled."""
        if self.compile is False:
            return None
        if self.compile is True:
            return {}
        return self.compile.model_dump(exclude_none=True)

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        # Imported here: resolving a name needs timm's registry, which is slow to import.
        from trainables.models.names import check_model_name

        check_model_name(name)
        return name

    @model_validator(mode="after")
    def _input_fits_model(self) -> ModelConfig:
        # Patch / window / knob checks from names alone: a bad combination fails before Ray.
        from trainables.models.names import check_knobs

        check_knobs(self)
        return self


class DatasetConfig(Strict):
    name: str = Field(
        "digits",
        description=f"dataset to train and evaluate on: {', '.join(DATASET_NAMES)}, or a Hugging "
        "Face image-classification set: `hf/<dataset id>` (local cache) or `hf:<path>` "
        "(save_to_disk folder, or Parquet files)",
    )
    train_split: str = Field("train", description="hf datasets: the split to train on")
    val_split: str | None = Field(
        None,
        description="hf datasets: the split to evaluate on (None = validation, else test, else "
        "val_fraction of the training split)",
    )
    image_column: str | None = Field(
        None, description="hf datasets: the image column (None = the first Image feature)"
    )
    label_column: str | None = Field(
        None, description="hf datasets: the label column (None = the first ClassLabel, or `label`)"
    )
    root: str = Field("data", description="where dataset files live (resolved to an absolute path)")
    download: bool = Field(True, description="download cifar10/100 when missing and online")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="digits/synthetic: held-out share")
    subset: int | None = Field(None, ge=1, description="cap samples per split (None = all)")
    num_classes: int = Field(10, ge=2, description="synthetic only: number of classes")
    num_samples: int = Field(512, ge=2, description="synthetic only: samples in all")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    pin_memory: bool = Field(False, description="DataLoader pin_memory (useful on CUDA)")
    prefetch_factor: int | None = Field(
        None, ge=1, description="batches each worker loads ahead (None = torch's 2; needs workers)"
    )
    persistent_workers: bool = Field(
        True, description="keep DataLoader workers alive between epochs (with num_workers > 0)"
    )
    on_device: bool = Field(
        False,
        description="in-memory datasets (digits, cifar10/100, synthetic): uint8 images held on "
        "the trial's device, shuffled, augmented and normalized there in batches; no DataLoader",
    )
    crop_pad: int = Field(
        0,
        ge=0,
        description="training random crop: reflect-pad by this many pixels at the stored size, "
        "crop back (0 = off; digits/synthetic need on_device)",
    )

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from trainables.registry import check_dataset_name

        check_dataset_name(name)
        return name

    @model_validator(mode="after")
    def _switches_fit_the_dataset(self) -> DatasetConfig:
        if self.on_device and self.name not in IN_MEMORY_DATASETS:
            raise ValueError(
                f"dataset.on_device: true needs an in-memory dataset ({', '.join(IN_MEMORY_DATASETS)}),"
                f" not {self.name!r}; set on_device: false to read it through the DataLoader"
            )
        if self.prefetch_factor is not None and self.num_workers == 0:
            raise ValueError(
                f"dataset.prefetch_factor: {self.prefetch_factor} needs dataset.num_workers >= 1 "
                "(the main process does not prefetch); set num_workers or drop prefetch_factor"
            )
        if self.crop_pad and not self.on_device and self.name in ("digits", "synthetic"):
            raise ValueError(
                f"dataset.crop_pad: {self.crop_pad} on {self.name} needs dataset.on_device: true "
                "(the loader keeps these pre-resized in memory, without per-sample augmentation)"
            )
        return self


class OptimConfig(Strict):
    name: str = Field("adamw", description="any optimizer timm.optim.create_optimizer_v2 knows")
    lr: float = Field(1.0e-3, gt=0, description="peak learning rate (after warm-up)")
    weight_decay: float = Field(
        0.05,
        ge=0,
        description="decoupled weight decay (timm applies it to weights, not norms/biases)",
    )
    momentum: float = Field(0.9, ge=0, le=1, description="momentum of sgd/momentum/nesterov")
    batch_size: int = Field(64, ge=1, description="samples per step (per worker)")
    auto_batch_size: bool = Field(
        False,
        description="on out-of-memory, halve batch_size until one training step fits, then "
        "train with it (recorded as optim/batch_size_used)",
    )
    epochs: int = Field(3, ge=1, description="training epochs")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    fused: bool | None = Field(
        None,
        description="torch's fused optimizer kernel (one kernel for all parameters): null = "
        "wherever the optimizer (adam, adamw, sgd, momentum, nesterov) and the device have one; "
        "false = torch's default foreach/for-loop step (recorded as env/fused_optimizer)",
    )
    scheduler: Literal["cosine", "none"] = Field(
        "cosine", description="timm's cosine schedule stepped per update, or a constant lr"
    )
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from 0, in epochs")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")
    max_train_batches: int | None = Field(None, ge=1, description="cap batches per epoch")
    max_val_batches: int | None = Field(None, ge=1, description="cap evaluation batches")

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        from trainables.models.installed import timm_optimizers

        known = sorted(timm_optimizers())
        if name.lower() not in known:
            import difflib

            close = difflib.get_close_matches(name.lower(), known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown optimizer {name!r}{hint} (any of timm's: adamw, sgd, ...)")
        return name.lower()


class CheckpointConfig(Strict):
    enabled: bool = Field(True, description="save a checkpoint each epoch through Ray Tune")
    num_to_keep: int | None = Field(1, ge=1, description="checkpoints kept per trial (None = all)")
    keep: Literal["best", "last"] = Field(
        "best", description="which checkpoints survive: best by `metric`, or the most recent"
    )
    metric: str = Field("val/acc", description="metric that ranks checkpoints (best is kept)")
    mode: Literal["max", "min"] = Field("max", description="max: higher `metric` is better")


class FinetuneConfig(Strict):
    freeze_backbone: bool = Field(False, description="train only the classifier head")
    checkpoint: str | None = Field(
        None, description="start from this local checkpoint (safetensors or torch file)"
    )


class LoraConfig(Strict):
    rank: int = Field(8, ge=0, description="LoRA rank; 0 = full fine-tune baseline")
    alpha: float = Field(
        16, gt=0, description="LoRA scaling numerator: updates scale by alpha / rank"
    )
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA branch input")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None,
        description="layers to adapt: names or ends of dotted names (`qkv`, `fc1`, `conv2` for "
        "CNNs), peft's `all-linear`, or None = the model's default (timm: qkv, proj; "
        "transformers: the query and value projections)",
    )
    variant: Literal["lora", "rslora", "dora"] = Field(
        "lora",
        description="peft variant: plain LoRA (alpha / r), rank-stabilized (alpha / sqrt r), or "
        "DoRA (weight-decomposed: a magnitude vector per adapted layer)",
    )


class PruneConfig(Strict):
    """The `prune:` section (trainable `prune_recover`; see docs/trainables-and-stages.md)."""

    method: Literal["unstructured", "structured"] = Field(
        "unstructured", description="zero single weights, or remove neurons/heads/channels"
    )
    ratio: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="share to remove: of the targeted weights (unstructured), of the neurons, "
        "heads or channels (structured)",
    )
    allocation: Literal["global", "uniform", "sensitivity"] = Field(
        "global",
        description="global: one magnitude ranking over all targeted layers (per kind when "
        "structured); uniform: each layer loses `ratio`; sensitivity: per-layer ratios from the "
        "sensitivity scan (more sensitive, pruned less) averaging `ratio`",
    )
    recover_epochs: int = Field(1, ge=0, description="fine-tuning epochs after pruning")
    round_to: int | None = Field(
        8,
        ge=1,
        description="structured: neurons/channels kept rounded to a multiple (None = exact)",
    )
    sensitivity: bool = Field(True, description="run the per-layer sensitivity analysis")
    sensitivity_ratios: list[float] = Field(
        default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9],
        description="ratios each layer is pruned at, alone, in the sensitivity scan",
    )
    sensitivity_max_batches: int | None = Field(
        None,
        ge=1,
        description="validation batches per sensitivity evaluation (None = optim.max_val_batches)",
    )
    sensitivity_samples: int | None = Field(
        None,
        ge=1,
        description="validation images each sensitivity evaluation uses (None = the whole split)",
    )
    histogram_bins: int = Field(64, ge=1, description="bins of the per-layer weight histograms")
    max_layer_ratio: float = Field(
        0.9,
        gt=0,
        lt=1,
        validate_default=True,  # its validator checks the allocation, also when left default
        description="allocation sensitivity: the most one layer may lose",
    )

    @field_validator("sensitivity_ratios")
    @classmethod
    def _ratios_in_range(cls, ratios: list[float]) -> list[float]:
        bad = [r for r in ratios if not 0 <= r < 1]
        if bad or not ratios:
            raise ValueError(
                f"prune.sensitivity_ratios {ratios}: need one or more values in [0, 1)"
            )
        return ratios

    @field_validator("max_layer_ratio")
    @classmethod
    def _allocation_possible(cls, max_ratio: float, info: Any) -> float:
        # The last field: every other one is validated by now and sits in info.data.
        data = info.data
        if data.get("allocation") == "sensitivity":
            if not data.get("sensitivity"):
                raise ValueError("prune.allocation: sensitivity needs prune.sensitivity: true")
            if data.get("ratio", 0) > max_ratio:
                raise ValueError(
                    f"prune.ratio {data['ratio']} exceeds prune.max_layer_ratio {max_ratio}: "
                    "no per-layer ratios can average it; raise max_layer_ratio or lower ratio"
                )
        return max_ratio


class BenchConfig(Strict):
    """The `bench:` section (trainable `bench`): cost without training, on synthetic batches."""

    modes: list[Literal["inference", "training"]] = Field(
        default_factory=lambda: ["inference", "training"],
        min_length=1,
        description="inference: forward latency rows (`latency` table); training: forward, "
        "backward and optimizer time per step (`train_bench` table)",
    )
    batch_sizes: list[int] | None = Field(
        None,
        min_length=1,
        description="batch sizes of both modes (None = profilers.latency.batch_sizes)",
    )
    precisions: list[Literal["fp32", "fp16", "bf16"]] | None = Field(
        None,
        min_length=1,
        description="precisions of both modes (None = profilers.latency.precisions, else the "
        "trial's precision)",
    )
    warmup: int = Field(5, ge=0, description="untimed training steps before each point")
    steps: int = Field(20, ge=3, description="timed training steps per point (at most)")
    max_point_s: float | None = Field(
        10.0,
        gt=0,
        description="stop a training point's steps (at no fewer than 3) after this many seconds",
    )
    model_as: Literal["train", "finetune", "lora"] = Field(
        "train",
        description="the model as this trainable trains it: train (every weight), finetune "
        "(finetune.freeze_backbone honoured), lora (lora.* adapters; rank 0 = every weight)",
    )

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, sizes: list[int] | None) -> list[int] | None:
        if sizes is not None and any(b < 1 for b in sizes):
            raise ValueError(f"bench.batch_sizes {sizes}: every batch size must be >= 1")
        return sizes


class StartConfig(Strict):
    """Where a later stage's trial starts: set per trial by the stage runner, never searched.

    Kept out of the searched parameters so labels show what the user varied; recorded in the
    `start/checkpoint`, `start/trial_id` and `start/stage` columns of `trials`.
    """

    stage: str = Field(description="the earlier stage the weights come from")
    trial_id: str | None = Field(None, description="the earlier stage's trial that produced them")
    checkpoint: str | None = Field(None, description="path of the checkpoint file")
    error: str | None = Field(
        None, description="why there is no checkpoint (the upstream trial failed, or left none)"
    )


class TrialConfig(Strict):
    """One trial, as the trainable sees it (search values already substituted)."""

    name: str = Field("sweep", min_length=1, description="sweep name (MLflow experiment)")
    trainable: Literal[TRAINABLE_NAMES] = Field("train", description="what a trial does")  # type: ignore[valid-type]
    model: ModelConfig = Field(default_factory=ModelConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    precision: Precision = Field("auto", description="auto = bf16 on capable CUDA, fp32 on CPU")
    device: Device = Field("auto", description="auto = cuda, else mps, else cpu")
    seed: int = Field(0, description="seeds python, numpy and torch (accelerate.utils.set_seed)")
    smoke: bool = Field(False, description="set by --smoke: tiny subset, one epoch")
    stage: str | None = Field(None, description="stage name in a multi-stage sweep")
    substitutions: list[str] = Field(
        default_factory=list,
        description="set by --smoke/--no-pretrained: what was swapped for an unreachable resource",
    )
    start: StartConfig | None = Field(
        None, description="set by the stage runner: the earlier stage's checkpoint to start from"
    )
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    profilers: ProfilersConfig = Field(default_factory=ProfilersConfig)

    @model_validator(mode="after")
    def _profiled_sizes_fit_model(self) -> TrialConfig:
        # The profilers run the model at these sizes too: a Swin whose windows would be padded
        # there, or a patch that does not divide the side, is not the model the rows name.
        from trainables.models.names import check_geometry

        m, prof = self.model, self.profilers
        for key, section in (("flops", prof.flops), ("latency", prof.latency)):
            for size in (section.input_sizes or []) if section is not None else []:
                try:
                    check_geometry(m.name, size, m.kwargs, m.patch_size)
                except ValueError as err:
                    raise ValueError(
                        f"profilers.{key}.input_sizes: {size} does not fit {m.name!r} ({err})"
                    ) from None
        return self

    @model_validator(mode="after")
    def _auto_batch_needs_a_loader(self) -> TrialConfig:
        if self.optim.auto_batch_size and self.dataset.on_device:
            raise ValueError(
                "optim.auto_batch_size rebuilds the DataLoaders at the size that fits; "
                "dataset.on_device: true has none: set one of them false"
            )
        return self

    def resolve_paths(self, base: Path) -> TrialConfig:
        """Make every path absolute against `base`: Ray runs each trial in its own directory."""
        out = self.model_copy(deep=True)
        out.dataset.root = str((base / out.dataset.root).resolve())
        if out.dataset.name.startswith("hf:"):
            out.dataset.name = "hf:" + str((base / out.dataset.name[3:]).resolve())
        if out.model.name.startswith("hf:"):
            out.model.name = "hf:" + str((base / out.model.name[3:]).resolve())
        if isinstance(out.model.pretrained, str):
            out.model.pretrained = str((base / out.model.pretrained).resolve())
        if out.finetune.checkpoint:
            out.finetune.checkpoint = str((base / out.finetune.checkpoint).resolve())
        return out
