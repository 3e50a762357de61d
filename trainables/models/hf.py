"""Hugging Face transformers image classifiers as lvmbench models: `hf/<repo id>` or `hf:<path>`.

`create_hf_model` loads `AutoModelForImageClassification` (the optional extra `lvmbench[hf]`) and
wraps it in `HFImageClassifier`, whose `forward(x)` returns the logits, so the trainables, the
profilers (fvcore and FlopCounterMode trace the wrapper; transformers' SDPA attention is counted by
the same SDPA handlers as timm's) and peft treat it like a timm model:

- the head is resized to the dataset's classes (`num_labels`, `ignore_mismatched_sizes=True`);
- `pretrained_cfg` carries the image processor's mean, std, resampling and crop in timm's keys,
  so `trainables.data.loaders.Pipeline.from_model` reads it as it reads timm's, and `classifier` names the
  head for `trainables.models.heads`;
- `lora_targets` is the default `lora.target_modules`: the query and value projections, the
  layers the LoRA paper adapts (`query`/`value` in transformers 4, `q_proj`/`v_proj` in 5);
- an input side other than the checkpoint's `image_size` is run with `interpolate_pos_encoding`
  where the model takes it (ViT-style position embeddings resampled per forward).

`pretrained: true` loads the weights; `false` builds the architecture from its config alone
(random init, `image_size` set to `model.img_size`). `model.kwargs` override config fields
(`num_hidden_layers: 2`), except `attn_implementation` (sdpa | eager), which goes to the loader.
Offline (`HF_HUB_OFFLINE=1`, or no network) a repo comes from the local cache; one that is not
there fails with the repo id and the cache path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.models.names import HF_HUB_PREFIX, HF_LOCAL_PREFIX

# PIL resample codes (what image processors store) -> timm's interpolation names.
PIL_INTERPOLATION = {
    0: "nearest",
    1: "lanczos",
    2: "bilinear",
    3: "bicubic",
    4: "box",
    5: "hamming",
}
# transformers' defaults when a checkpoint ships no image processor (IMAGENET_STANDARD_*).
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
# Query/value projection names: transformers 4 (ViT, DeiT, BEiT, ...), then transformers 5.
LORA_TARGETS = (("query", "value"), ("q_proj", "v_proj"))
LOADER_KWARGS = ("attn_implementation",)


class HFMissingError(RuntimeError):
    """A transformers model that is not on this machine and cannot be downloaded."""


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            "model.name 'hf/...' needs the transformers package: pip install 'lvmbench[hf]'"
        ) from err
    return transformers


def source_of(name: str) -> tuple[str, bool]:
    """(repo id or local folder, is_local) of an `hf/` or `hf:` model name."""
    if name.startswith(HF_LOCAL_PREFIX):
        return name.removeprefix(HF_LOCAL_PREFIX), True
    return name.removeprefix(HF_HUB_PREFIX), False


def hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


class HFImageClassifier(nn.Module):
    """A transformers image classifier whose forward takes pixels and returns logits."""

    def __init__(
        self, hf: nn.Module, *, source: str, data_cfg: dict[str, Any], native_size: int | None
    ) -> None:
        super().__init__()
        self.hf = hf
        self.source = source
        self.native_size = native_size
        self._interpolates = _takes_interpolation(hf)
        head = head_name(hf)
        self.pretrained_cfg: dict[str, Any] = {**data_cfg, "classifier": f"hf.{head}"}
        names = {n.rsplit(".", 1)[-1] for n, m in hf.named_modules() if isinstance(m, nn.Linear)}
        self.lora_targets: list[str] | None = next(
            (list(pair) for pair in LORA_TARGETS if set(pair) <= names), None
        )

    @property
    def num_classes(self) -> int:
        return int(self.hf.config.num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = {}
        if self._interpolates and self.native_size and int(x.shape[-1]) != self.native_size:
            kwargs["interpolate_pos_encoding"] = True
        return self.hf(pixel_values=x, **kwargs).logits


def head_name(hf: nn.Module) -> str:
    """Dotted name (in `hf`) of the classifier: the last linear layer with num_labels outputs."""
    labels = int(hf.config.num_labels)  # type: ignore[union-attr]
    found = [
        n for n, m in hf.named_modules() if isinstance(m, nn.Linear) and m.out_features == labels
    ]
    if not found:
        raise ValueError(
            f"cannot find the classifier of {type(hf).__name__}: no linear layer with "
            f"{labels} outputs"
        )
    return found[-1]


def _takes_interpolation(hf: nn.Module) -> bool:
    import inspect

    return "interpolate_pos_encoding" in inspect.signature(hf.forward).parameters


def create_hf_model(
    name: str, num_classes: int, img_size: int, pretrained: bool, kwargs: dict[str, Any]
) -> HFImageClassifier:
    """The `hf/` or `hf:` model `name` with a `num_classes`-way head (see the module docstring)."""
    transformers = require_transformers()
    src, local = source_of(name)
    loader = {k: kwargs[k] for k in LOADER_KWARGS if k in kwargs}
    overrides = {k: v for k, v in kwargs.items() if k not in LOADER_KWARGS}
    try:
        config = transformers.AutoConfig.from_pretrained(src, **overrides)
        native = getattr(config, "image_size", None)
        if config.num_labels != num_classes:
            config.id2label = {i: str(i) for i in range(num_classes)}
            config.label2id = {str(i): i for i in range(num_classes)}
        if pretrained:
            # A checkpoint head of another size is dropped and re-created at num_labels.
            hf = transformers.AutoModelForImageClassification.from_pretrained(
                src, config=config, ignore_mismatched_sizes=True, **loader
            )
        else:
            if native is not None:
                config.image_size = img_size  # random init: position embeddings at this size
                native = img_size
            hf = transformers.AutoModelForImageClassification.from_config(config, **loader)
    except OSError as err:
        where = str(Path(src).resolve()) if local else f"{src} (cache: {hub_cache()})"
        raise HFMissingError(
            f"model.name {name!r}: cannot load {where}: {err.__class__.__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}. Offline, a hub model must be in the "
            f"local cache {hub_cache()}: fetch it where the hub is reachable "
            f"(huggingface-cli download {src}) or save it with save_pretrained and use 'hf:<folder>'."
        ) from err
    if isinstance(native, (list, tuple)):
        native = int(native[0])
    return HFImageClassifier(
        hf, source=src, data_cfg=processor_data_cfg(src, img_size), native_size=native
    )


def processor_data_cfg(src: str, img_size: int) -> dict[str, Any]:
    """timm-style data config (mean, std, interpolation, crop_pct) from `src`'s image processor.

    A checkpoint without a processor gets transformers' defaults (mean = std = 0.5, bilinear),
    recorded as such in `data_source`.
    """
    transformers = require_transformers()
    out: dict[str, Any] = {
        "input_size": (3, img_size, img_size),
        "mean": DEFAULT_MEAN,
        "std": DEFAULT_STD,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "data_source": "transformers defaults (no image processor)",
    }
    try:
        proc = transformers.AutoImageProcessor.from_pretrained(src)
    except (OSError, ValueError, KeyError, ImportError):
        return out
    mean, std = getattr(proc, "image_mean", None), getattr(proc, "image_std", None)
    if mean is not None and std is not None:
        out["mean"] = tuple(float(x) for x in mean)
        out["std"] = tuple(float(x) for x in std)
    resample = getattr(proc, "resample", None)
    code = getattr(resample, "value", resample)
    if isinstance(code, int) and code in PIL_INTERPOLATION:
        out["interpolation"] = PIL_INTERPOLATION[code]
    crop = getattr(proc, "crop_pct", None)
    if isinstance(crop, (int, float)) and 0 < crop <= 1:
        out["crop_pct"] = float(crop)
    out["data_source"] = f"{type(proc).__name__} of {src}"
    return out


def hf_cached(name: str) -> bool:
    """Whether `hf/<repo>` has its config (and weights) in the local Hugging Face cache, or an
    `hf:` folder exists: the offline check before Ray starts."""
    src, local = source_of(name)
    if local:
        return (Path(src) / "config.json").is_file()
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(src, "config.json"), str):
        return False
    return any(
        isinstance(try_to_load_from_cache(src, f), str)
        for f in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
    )
