"""Model names a sweep file may use: timm names (with an optional pretrained tag),
`torchvision/<name>`, Hugging Face transformers classifiers (`hf/<repo id>`, `hf:<local path>`),
and short aliases for the seeds' models. Checking a name reads timm's or torchvision's registry
through `trainables.models.installed` (imported once per installed version, then cached) and never
imports transformers; building a model lives in `trainables.models.create`.

`check_geometry` checks, from names alone, that an input size fits a model: the side divisible by
the patch (ViT, DeiT, hybrids: by the CNN stem's total stride) and a Swin window that tiles the
token grid at every stage. The sweep schema calls it, so a bad combination fails before Ray starts.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, NamedTuple

from trainables.models.installed import timm_models, torchvision_models

TORCHVISION_PREFIX = "torchvision/"
HF_HUB_PREFIX = "hf/"
HF_LOCAL_PREFIX = "hf:"
# A Hugging Face repo id: `name` or `owner/name` (letters, digits, - _ .).
HF_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

# Families the report groups by. ViT-family models (VisionTransformer in timm) take LayerScale and
# the dropout knobs; Swin takes the dropout knobs but no LayerScale.
VIT_FAMILIES = ("ViT", "DeiT", "Hybrid", "ViT-optimized")
DROPOUT_FAMILIES = (*VIT_FAMILIES, "Swin")
# Seed 003's optimized ViT: LayerScale (init 1e-5), constant DropPath 0.1, 0.1 dropout in
# attention and MLP, fused scaled-dot-product attention. All of it timm's ViT options.
OPTIMIZED = {
    "init_values": 1e-5,
    "drop_path_rate": 0.1,
    "attn_drop_rate": 0.1,
    "proj_drop_rate": 0.1,
}


class Alias(NamedTuple):
    """A short name for a seed's model: the timm name it builds and how it is built."""

    timm_name: str
    kwargs: dict[str, Any]
    family: str
    # Input pixels per token side: the patch (ViT, DeiT, Swin) or the stem's total stride
    # (hybrids); None for CNNs, which take any size.
    stride: int | None = None
    window: int | None = None  # Swin's attention window
    patch_knob: bool = False  # model.patch_size may change the patch
    drop_path: str = "linear"  # timm's schedule, or the same rate in every block
    attention: str = "auto"  # what `model.attention: auto` means for this alias
    default_img_size: int = 224
    note: str = ""


def _vit(timm_name: str, family: str = "ViT", note: str = "", **kw: Any) -> Alias:
    patch = int(re.search(r"patch(\d+)", timm_name).group(1))  # type: ignore[union-attr]
    return Alias(timm_name, kw, family, stride=patch, patch_knob=True, note=note)


def _optimized(timm_name: str, note: str) -> Alias:
    base = _vit(timm_name, "ViT-optimized", note, **OPTIMIZED)
    return base._replace(drop_path="constant", attention="fused")


ALIASES: dict[str, Alias] = {
    # ViT (seed 000 / 003): base, large, and small and tiny for CPU runs.
    "vit": _vit("vit_base_patch16_224", note="ViT-B/16"),
    "vit_b16": _vit("vit_base_patch16_224", note="ViT-B/16"),
    "vit_b32": _vit("vit_base_patch32_224", note="ViT-B/32"),
    "vit_l16": _vit("vit_large_patch16_224", note="ViT-L/16"),
    "vit_s16": _vit("vit_small_patch16_224", note="ViT-S/16 (CPU runs)"),
    "vit_ti16": _vit("vit_tiny_patch16_224", note="ViT-Ti/16 (CPU runs)"),
    "deit": _vit("deit_base_patch16_224", "DeiT", "DeiT-B/16"),
    "deit_s": _vit("deit_small_patch16_224", "DeiT", "DeiT-S/16"),
    "deit_ti": _vit("deit_tiny_patch16_224", "DeiT", "DeiT-Ti/16"),
    "swin": Alias("swin_base_patch4_window7_224", {}, "Swin", 4, 7, True, note="Swin-B 4/7"),
    "swin_t": Alias("swin_tiny_patch4_window7_224", {}, "Swin", 4, 7, True, note="Swin-T 4/7"),
    "resnet": Alias("resnet50", {}, "ResNet", note="ResNet-50"),
    "resnet18": Alias("resnet18", {}, "ResNet", note="ResNet-18"),
    "resnet50": Alias("resnet50", {}, "ResNet", note="ResNet-50"),
    "efficientnet_b0": Alias("efficientnet_b0", {}, "EfficientNet", note="EfficientNet-B0"),
    # BiT (seed 003). BiT-M: ImageNet-21k weights. timm holds no BiT-S (ImageNet-1k only) weights:
    # `bit_s_r152x2` with pretrained: true loads timm's default R152x2 weights.
    "bit": Alias("resnetv2_50x1_bit.goog_in21k", {}, "BiT", note="BiT-M R50x1"),
    "bit_m_r50x1": Alias("resnetv2_50x1_bit.goog_in21k", {}, "BiT", note="BiT-M R50x1"),
    "bit_s_r152x2": Alias("resnetv2_152x2_bit", {}, "BiT", note="BiT-S R152x2 (architecture)"),
    # Hybrids: a ViT on a ResNet stem's feature map; tokens every `stride` input pixels.
    "hybrid": Alias("vit_base_r50_s16_224", {}, "Hybrid", 16, note="R50+ViT-B/16"),
    "vit_b_r50": Alias("vit_base_r50_s16_224", {}, "Hybrid", 16, note="R50+ViT-B/16"),
    "vit_b_r50_384": Alias(
        "vit_base_r50_s16_384", {}, "Hybrid", 16, default_img_size=384, note="R50+ViT-B/16 @384"
    ),
    "vit_s_r26": Alias("vit_small_r26_s32_224", {}, "Hybrid", 32, note="R26+ViT-S/32"),
    # A stem-only ResNet (stride 4) under 8x8 patches: a token every 32 pixels, whatever "s16" says.
    "vit_ti_r": Alias("vit_tiny_r_s16_p8_224", {}, "Hybrid", 32, note="R-stem+ViT-Ti, stride 32"),
    # Seed 003's ViTOptimized, at three sizes (the same knobs on ViT-B, -S, -Ti).
    "vit_optimized": _optimized("vit_base_patch16_224", "ViT-B/16 optimized"),
    "vit_optimized_s16": _optimized("vit_small_patch16_224", "ViT-S/16 optimized"),
    "vit_optimized_ti16": _optimized("vit_tiny_patch16_224", "ViT-Ti/16 optimized"),
}


class UnknownModelError(ValueError):
    pass


def is_hf(name: str) -> bool:
    """Whether `name` names a Hugging Face transformers model (`hf/<repo>` or `hf:<path>`)."""
    return name.startswith((HF_HUB_PREFIX, HF_LOCAL_PREFIX))


def check_model_name(name: str) -> None:
    """Raise UnknownModelError, with close matches, unless `name` resolves to a model."""
    if name in ALIASES:
        return
    if is_hf(name):
        _check_hf_name(name)
        return
    if name.startswith(TORCHVISION_PREFIX):
        arch = name.removeprefix(TORCHVISION_PREFIX)
        known = torchvision_models()
        if arch in known:
            return
        close = difflib.get_close_matches(arch, sorted(known), n=3)
        hint = (
            f"; did you mean {', '.join(TORCHVISION_PREFIX + c for c in close)}?" if close else ""
        )
        raise UnknownModelError(f"unknown torchvision model {arch!r}{hint}")
    # timm names may carry a pretrained tag: "vit_base_patch16_224.augreg_in21k" (timm's
    # split_model_name_tag splits at the first dot).
    arch = name.split(".", 1)[0]
    if arch in timm_models():
        return
    close = difflib.get_close_matches(arch, sorted(timm_models() | set(ALIASES)), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    import importlib.metadata

    raise UnknownModelError(
        f"unknown model {name!r}{hint} (accepted: any model name of the installed timm "
        f"{importlib.metadata.version('timm')}, 'torchvision/<name>', 'hf/<repo id>', "
        f"'hf:<local path>', or an alias: {', '.join(ALIASES)})"
    )


def _check_hf_name(name: str) -> None:
    if name.startswith(HF_HUB_PREFIX):
        repo = name.removeprefix(HF_HUB_PREFIX)
        if not HF_REPO_ID.match(repo):
            raise UnknownModelError(
                f"model.name {name!r}: after 'hf/' give a Hugging Face repo id such as "
                "google/vit-base-patch16-224"
            )
        return
    from pathlib import Path

    path = Path(name.removeprefix(HF_LOCAL_PREFIX))
    if not (path / "config.json").is_file():
        raise UnknownModelError(
            f"model.name {name!r}: no config.json under {path.resolve()} (an 'hf:' path is a "
            "folder written by save_pretrained)"
        )


def resolve(name: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Alias -> (real name, kwargs); the user's kwargs win over the alias's."""
    if name in ALIASES:
        alias = ALIASES[name]
        return alias.timm_name, {**alias.kwargs, **kwargs}
    return name, dict(kwargs)


def family(name: str) -> str:
    """The family a model belongs to, for grouping: ViT, DeiT, Swin, BiT, Hybrid, ResNet, ..."""
    if name in ALIASES:
        return ALIASES[name].family
    if is_hf(name):
        return "HF"
    arch = name.removeprefix(TORCHVISION_PREFIX).split(".")[0]
    if _hybrid_stride(arch) is not None:
        return "Hybrid"
    for prefix, fam in (
        ("vit_", "ViT"),
        ("deit", "DeiT"),
        ("swin", "Swin"),
        ("resnetv2_", "BiT"),
        ("resnet", "ResNet"),
        ("efficientnet", "EfficientNet"),
    ):
        if arch.startswith(prefix):
            return fam
    return "other"


def _hybrid_stride(arch: str) -> int | None:
    """The total stride of a timm hybrid ViT named like vit_base_r50_s16_224, else None.

    `vit_tiny_r_s16_p8_*` is a stem-only ResNet (stride 4) under patches of `p` pixels: its
    tokens are 4 x p pixels apart (32), not the 16 its name suggests.
    """
    match = re.match(r"^vit_\w+?_r(?:\d+|esnet\w*|)_s(\d+)(?:_p(\d+))?", arch)
    if match is None:
        return None
    return 4 * int(match.group(2)) if match.group(2) else int(match.group(1))


class Geometry(NamedTuple):
    """What constrains the input side of a model, read from its name and kwargs."""

    family: str
    stride: int | None  # pixels per token side (patch, or stem stride x patch); None: any size
    window: int | None
    stages: int  # Swin: stages, each halving the token grid
    patch_knob: bool  # whether model.patch_size applies


def geometry(name: str, kwargs: dict[str, Any], patch_size: int | None) -> Geometry:
    """The input constraints of model `name` built with `kwargs` (and `patch_size` when set)."""
    fam = family(name)
    if name in ALIASES:
        alias = ALIASES[name]
        stride, window, knob = alias.stride, alias.window, alias.patch_knob
        arch = alias.timm_name.split(".")[0]
    else:
        arch = name.split(".")[0]
        hybrid = _hybrid_stride(arch)
        patch = re.search(r"patch(\d+)", arch)
        win = re.search(r"window(\d+)", arch)
        stride = hybrid or (
            int(patch.group(1)) if patch and fam in ("ViT", "DeiT", "Swin") else None
        )
        window = int(win.group(1)) if win and fam == "Swin" else None
        knob = fam in ("ViT", "DeiT", "Swin") and stride is not None
    if knob:
        stride = patch_size or kwargs.get("patch_size") or stride
    if fam == "Swin":
        window = kwargs.get("window_size") or window
    stages = len(kwargs.get("depths") or (2, 2, 6, 2))
    return Geometry(fam, stride, window, stages, knob)


def check_geometry(
    name: str, img_size: int, kwargs: dict[str, Any], patch_size: int | None
) -> None:
    """Raise ValueError, naming the key, when `img_size` does not fit the model's patches/windows."""
    if is_hf(name) or name.startswith(TORCHVISION_PREFIX):
        if patch_size is not None:
            raise ValueError(
                f"model.patch_size: {patch_size} applies to timm ViT, DeiT and Swin models, not "
                f"{name!r}; drop it"
            )
        return
    geo = geometry(name, kwargs, patch_size)
    if patch_size is not None and not geo.patch_knob:
        why = (
            "hybrids take their tokens from the CNN stem (fixed stride)"
            if geo.family == "Hybrid"
            else "it has no patches"
        )
        raise ValueError(
            f"model.patch_size: {patch_size} does not apply to {name!r} ({why}); accepted on "
            "ViT, DeiT and Swin models (vit_b16, deit, swin, ...)"
        )
    if geo.stride is None:
        return
    key = "model.patch_size" if geo.patch_knob else "model.img_size"
    if img_size % geo.stride:
        low = max(geo.stride, img_size - img_size % geo.stride)
        raise ValueError(
            f"model.img_size: {img_size} is not divisible by the {'patch' if geo.patch_knob else 'stem stride'} "
            f"{geo.stride} of {name!r} (set by {key} or the name); use a multiple of "
            f"{geo.stride} ({low} or {low + geo.stride})"
            + (" or a patch size that divides it" if geo.patch_knob else "")
        )
    if geo.family == "Swin" and geo.window is not None:
        _check_swin_window(name, img_size, geo)


def _check_swin_window(name: str, img_size: int, geo: Geometry) -> None:
    """Each stage's token grid must be tiled by whole windows, or be no larger than one window
    (timm then shrinks the window to the grid); otherwise timm pads every window with masked
    tokens, which is not the model the numbers would claim to describe."""
    grid = img_size // geo.stride  # type: ignore[operator]
    window = geo.window
    assert window is not None
    for stage in range(geo.stages):
        side = grid // 2**stage
        if side and side > window and side % window:
            fits = [w for w in range(1, side + 1) if grid % w == 0 and _tiles(grid, w, geo.stages)]
            raise ValueError(
                f"model.kwargs.window_size: window {window} does not fit the {side}x{side} token "
                f"grid of stage {stage + 1} (img_size {img_size} / patch {geo.stride} = {grid}) of "
                f"{name!r}; use window_size {', '.join(map(str, fits[-3:])) or '1'}, or an "
                f"img_size whose grid is a multiple of {window} (e.g. {window * geo.stride * 8})"
            )


def _tiles(grid: int, window: int, stages: int) -> bool:
    return all((grid // 2**s) <= window or (grid // 2**s) % window == 0 for s in range(stages))


KNOBS = ("init_values", "drop_path_rate", "attn_drop_rate", "proj_drop_rate")


def check_knobs(cfg: Any) -> None:
    """Check a `ModelConfig`: the input fits (`check_geometry`) and each ViT knob set applies."""
    check_geometry(cfg.name, cfg.img_size, cfg.kwargs, cfg.patch_size)
    fam = family(cfg.name)
    for knob in KNOBS:
        if getattr(cfg, knob) is None:
            continue
        accepted = VIT_FAMILIES if knob == "init_values" else DROPOUT_FAMILIES
        if fam not in accepted:
            raise ValueError(
                f"model.{knob}: {getattr(cfg, knob)} applies to timm {', '.join(accepted)} models, "
                f"not {cfg.name!r} ({fam}); drop it or pass the constructor's own option in "
                "model.kwargs"
            )
    if cfg.drop_path_schedule == "constant" and fam not in VIT_FAMILIES:
        raise ValueError(
            f"model.drop_path_schedule: constant applies to ViT-family models (timm "
            f"VisionTransformer blocks), not {cfg.name!r} ({fam})"
        )


def model_kwargs(cfg: Any) -> tuple[str, dict[str, Any]]:
    """(timm/torchvision/hf name, constructor kwargs) of a `ModelConfig`: the alias's kwargs, the
    knobs that are set (patch_size, init_values, dropout rates), then the user's kwargs."""
    knobs = {k: getattr(cfg, k) for k in KNOBS if getattr(cfg, k) is not None}
    if cfg.patch_size is not None:
        knobs["patch_size"] = cfg.patch_size
    name, kwargs = resolve(cfg.name, {})
    return name, {**kwargs, **knobs, **cfg.kwargs}


def drop_path_schedule(cfg: Any) -> str:
    """linear or constant: the config's choice, else the alias's."""
    if cfg.drop_path_schedule != "auto":
        return cfg.drop_path_schedule
    return ALIASES[cfg.name].drop_path if cfg.name in ALIASES else "linear"


def default_attention(name: str) -> str:
    """What `model.attention: auto` means for `name`: fused for vit_optimized, else the model's."""
    return ALIASES[name].attention if name in ALIASES else "auto"
