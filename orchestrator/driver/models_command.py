"""`python -m orchestrator models [PATTERN] [--json]`: the model names a sweep may use, with what
they cost at their default input size.

Lists the aliases (every seed family), then, when a pattern is given, the timm names matching it
(`vit_*patch16*`; a pattern without `*` matches anywhere in the name) and the transformers models
in the local Hugging Face cache (`hf/<repo id>`) whose id matches. Each row has the model's
parameters and forward GMACs (fvcore through `profilers.flops`, the counter the trials use) at its
default size, on a random-init model built on the CPU. Figures are computed for every alias and
for the first `--limit` other matches (timm holds over a thousand names); the rest are listed with
null figures and say so. A model that cannot be built or counted gets null figures and its error.

Counting traces a forward pass of each model (ViT-L or BiT R152x2 at 224 px take tens of seconds
on a small CPU), so counted figures are kept in `model_figures.json` in lvmbench's cache folder
(`$LVMBENCH_CACHE`, else `$XDG_CACHE_HOME/lvmbench`, else `~/.cache/lvmbench`), keyed by model, kwargs, input size and the timm / torch / fvcore
versions; `--refresh` counts again.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DEFAULT_LIMIT = 10
DEFAULT_SIZE = 224


def _matches(pattern: str | None, *names: str) -> bool:
    if not pattern:
        return True
    pat = pattern.lower() if "*" in pattern or "?" in pattern else f"*{pattern.lower()}*"
    return any(fnmatch.fnmatch(n.lower(), pat) for n in names)


def match_rank(pattern: str, name: str) -> int:
    """0 the name asked for, 1 a name starting with it, 2 any other match: `models vit_tiny`
    lists (and counts figures for) `vit_tiny_*` before `davit_tiny` or `maxvit_tiny_*`."""
    pat, low = pattern.lower().strip("*"), name.lower()
    if low == pat or low == f"hf/{pat}":
        return 0
    return 1 if low.startswith(pat) else 2


def alias_rows(pattern: str | None) -> list[dict[str, Any]]:
    from trainables.models.names import ALIASES

    return [
        {
            "name": alias,
            "kind": "alias",
            "model": a.timm_name,
            "family": a.family,
            "note": a.note,
            "img_size": a.default_img_size,
            "patch": a.stride,
            "window": a.window,
            "kwargs": a.kwargs,
        }
        for alias, a in ALIASES.items()
        if _matches(pattern, alias, a.timm_name, a.family, a.note)
    ]


def timm_rows(pattern: str, img_size: int | None) -> list[dict[str, Any]]:
    """timm's names matching `pattern` with their default input sizes, from the name cache
    (`trainables.models.installed`): a warm cache answers without importing timm."""
    from trainables.models.installed import cached_names
    from trainables.models.names import family

    def read() -> list[str]:
        import timm

        out = []
        for name in timm.list_models():
            cfg = timm.models.get_pretrained_cfg(name)
            out.append(f"{name}|{int(cfg.input_size[-1]) if cfg is not None else DEFAULT_SIZE}")
        return out

    sizes = dict(entry.rsplit("|", 1) for entry in cached_names("timm", "model_sizes", read))
    pat = pattern if "*" in pattern or "?" in pattern else f"*{pattern}*"
    rows = []
    for name in sorted(n for n in sizes if fnmatch.fnmatch(n, pat)):
        size = img_size or int(sizes[name])
        rows.append(
            {"name": name, "kind": "timm", "model": name, "family": family(name), "img_size": size}
        )
    return rows


def hf_rows(pattern: str | None) -> list[dict[str, Any]]:
    """transformers image classifiers in the local hub cache whose repo id matches `pattern`."""
    try:
        from huggingface_hub import scan_cache_dir
    except ImportError:
        return []
    want = (pattern or "").removeprefix("hf/")
    try:
        repos = scan_cache_dir().repos
    except Exception:  # no cache folder yet
        return []
    rows = []
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not _matches(want, repo.repo_id):
            continue
        config = _cached_config(repo.repo_id)
        archs = (config or {}).get("architectures") or []
        if not any(a.endswith("ForImageClassification") for a in archs):
            continue
        size = config.get("image_size", DEFAULT_SIZE) if config else DEFAULT_SIZE
        rows.append(
            {
                "name": f"hf/{repo.repo_id}",
                "kind": "hf",
                "model": archs[0],
                "family": "HF",
                "img_size": int(size[0] if isinstance(size, list) else size),
            }
        )
    return rows


def _cached_config(repo_id: str) -> dict[str, Any] | None:
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(path, str):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def figures(name: str, img_size: int) -> dict[str, Any]:
    """params and forward GMACs of `name` at `img_size` (random init, CPU, batch 1)."""
    import torch

    from profilers.flops import fvcore_macs
    from trainables.config import ModelConfig
    from trainables.models.create import create_model

    out: dict[str, Any] = {"params": None, "params_m": None, "gmacs": None, "error": None}
    try:
        model = create_model(ModelConfig(name=name, img_size=img_size), num_classes=1000).eval()
        params = sum(p.numel() for p in model.parameters())
        out.update(params=params, params_m=round(params / 1e6, 3))
        with torch.no_grad():
            macs, _ = fvcore_macs(model, torch.randn(1, 3, img_size, img_size))
        out["gmacs"] = round(macs / 1e9, 4)
    except Exception as exc:  # a model that fails is listed with its reason, never as 0
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    return out


def cache_path() -> Path:
    from trainables.models.installed import cache_dir

    return cache_dir() / "model_figures.json"


def _versions() -> str:
    from importlib.metadata import version

    return ",".join(f"{p}={version(p)}" for p in ("timm", "torch", "fvcore"))


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, cache: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=0, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home only costs the next run its counting time


def list_models(
    pattern: str | None,
    *,
    limit: int = DEFAULT_LIMIT,
    img_size: int | None = None,
    with_figures: bool = True,
    refresh: bool = False,
) -> list[dict[str, Any]]:
    """The rows the command prints (see the module docstring)."""
    rows = alias_rows(pattern)
    for row in rows:
        if img_size:
            row["img_size"] = img_size
    others: list[dict[str, Any]] = []
    if pattern:
        if not pattern.startswith(("hf/", "hf:")):
            others += timm_rows(pattern, img_size)
        others += hf_rows(pattern)
        others.sort(key=lambda r: match_rank(pattern, r["name"]))  # stable: timm's order within
    store = {} if refresh else _load_cache(cache_path())
    versions = _versions() if with_figures else ""
    counted_now = 0
    for i, row in enumerate([*rows, *others]):
        counted = row["kind"] == "alias" or i - len(rows) < limit
        if not with_figures or not counted:
            why = "--no-figures" if not with_figures else f"beyond --limit {limit}"
            row.update(params=None, params_m=None, gmacs=None, error=None, figures=why)
            continue
        # Aliases that build the same model share one count (vit / vit_b16, hybrid / vit_b_r50).
        kwargs = json.dumps(row.get("kwargs") or {}, sort_keys=True)
        key = f"{row['model']}|{kwargs}|{row['img_size']}|{versions}"
        if key not in store or store[key].get("error"):
            store[key] = figures(row["name"], row["img_size"])
            counted_now += 1
        row.update(store[key], figures="counted")
    if counted_now:
        _save_cache(cache_path(), store)
    return [*rows, *others]


def _print_table(rows: Iterable[dict[str, Any]]) -> None:
    header = ["name", "kind", "model", "family", "img", "patch", "params M", "GMACs", "note"]
    lines = [header]
    for r in rows:
        lines.append(
            [
                r["name"],
                r["kind"],
                r["model"],
                r["family"],
                str(r["img_size"]),
                "" if r.get("patch") is None else str(r["patch"]),
                "-" if r["params_m"] is None else f"{r['params_m']:.2f}",
                "-" if r["gmacs"] is None else f"{r['gmacs']:.3f}",
                r.get("error")
                or r.get("note")
                or ("" if r["figures"] == "counted" else r["figures"]),
            ]
        )
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def run(args: argparse.Namespace) -> int:
    """`python -m orchestrator models` (its flags: `orchestrator.cli`)."""
    rows = list_models(
        args.pattern,
        limit=args.limit,
        img_size=args.img_size,
        with_figures=not args.no_figures,
        refresh=args.refresh,
    )
    if args.json:
        json.dump(rows, sys.stdout, indent=1, default=str)
        print()
    else:
        _print_table(rows)
    return 0
