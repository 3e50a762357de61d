"""`prune_recover`: prune a trained model, measure it, fine-tune it back, measure again.

One trial: load the dense model (`finetune.checkpoint`, or `model.pretrained` as a path, e.g. the
best checkpoint of an earlier stage) -> evaluate and profile it -> per-layer sensitivity scan ->
prune (`prune.method` at `prune.ratio`, layers' shares set by `prune.allocation`) with masks made
permanent -> evaluate and profile the model as it now runs -> recover for `prune.recover_epochs`
(unstructured masks held, so pruned weights stay zero) -> evaluate once more.

Metrics: the per-trial facts go once, with the first epoch report (the `trials` row); the
`recovered/` figures go in the trial-end report, after recovery:

| key                               | unit     | meaning                                              |
|-----------------------------------|----------|------------------------------------------------------|
| `val/acc`, `val/f1_macro`, ...    |          | per recovery epoch, as any trial (epoch 0 = no recovery: the pruned model) |
| `flops/*`, `params/*`, `model/*`, `latency/*`, `mem/infer_*` | | static profile of the pruned model as it runs (profilers' keys) |
| `dense/flops/*`, `dense/params/*`, `dense/model/*`, `dense/latency/*`, `dense/mem/infer_*` | | the same profile of the dense model |
| `dense/val/acc`, `dense/val/f1_macro`, `dense/val/loss` | | the dense model before pruning      |
| `pruned/val/acc`, `pruned/val/f1_macro`, `pruned/val/loss` | | right after pruning, before recovery |
| `recovered/val/acc`, `recovered/val/f1_macro`, `recovered/val/loss` | | after recovery, masks made permanent |
| `prune/sparsity`                  | fraction | targeted weights zeroed or removed (trainables/pruning/figures.py) |
| `prune/model_sparsity`            | fraction | zeros among all parameters of the pruned model        |
| `params/nonzero`                  | count    | non-zero parameters of the pruned model               |
| `model/sparse_size_mb`            | MiB      | size with the targeted weights stored as CSR          |
| `dense/prune/model_sparsity`, `dense/params/nonzero`, `dense/model/sparse_size_mb` | | the same for the dense model |
| `recovered/prune/sparsity`        | fraction | `prune/sparsity` after recovery (held masks: unchanged) |
| `init/*`                          |          | where the dense weights came from (trainables/models/start_weights.py) |
| `prune/targeted_params`           | count    | weights in the targeted layers of the dense model     |
| `prune/sensitivity_s`             | s        | wall time of the sensitivity scan (None when off)     |
| `prune/prune_s`                   | s        | wall time of pruning itself                           |

The scan evaluates `prune.sensitivity_samples` validation images (all when null), in at most
`prune.sensitivity_max_batches` batches (default `optim.max_val_batches`). --smoke
(`orchestrator/driver/smoke.py`) keeps the smallest and largest ratio and 32 images.

Tables: `sensitivity` (trainables/pruning/sensitivity.py), `weights` (per-layer histograms, phases
before / pruned / recovered), `pruned_layers` (per-layer weights before / after), and the
profilers' `flops` and `latency` rows with `tag` "dense" or "" (pruned).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from profilers.metric_registry import INT, F, declare
from trainables.config import PruneConfig, TrialConfig
from trainables.data.loaders import make_loader
from trainables.loop.epoch import evaluate
from trainables.loop.fit import fit
from trainables.loop.profiling import static_profile
from trainables.loop.reporting import Reporter, Tables
from trainables.loop.setup import TrialContext, TrialSetup
from trainables.models.start_weights import start_model
from trainables.pruning.apply import (
    hold_masks,
    make_permanent,
    structured_prune,
    unstructured_prune,
)
from trainables.pruning.figures import (
    histogram_edges,
    layer_rows,
    sparsity_figures,
    targeted_numel,
    weight_histogram_rows,
)
from trainables.pruning.sensitivity import ratios_from_sensitivity, sensitivity_scan
from trainables.pruning.targets import prunable_layers, structured_units

declare(
    __name__,
    {
        "prune/targeted_params": (
            INT,
            "count",
            "weights in the targeted layers of the dense model",
        ),
        "prune/sensitivity_s": (F, "s", "wall time of the sensitivity scan"),
        "prune/prune_s": (F, "s", "wall time of pruning itself"),
    },
)


def _tagged(metrics: dict[str, Any], tag: str) -> dict[str, Any]:
    return {f"{tag}/{k}": v for k, v in metrics.items()}


def _targets(
    model: nn.Module, method: str, example: torch.Tensor
) -> tuple[list[str], dict[str, int]]:
    """Targeted layer names, and the allocation's sizes (weights per layer or structured unit)."""
    if method == "unstructured":
        layers = prunable_layers(model)
        return list(layers), {n: m.weight.numel() for n, m in layers.items()}
    modules = dict(model.named_modules())
    units = structured_units(model, example)
    names = list(dict.fromkeys(n for u in units for n in u.layers))
    sizes = {u.name: sum(modules[n].weight.numel() for n in u.layers) for u in units}
    return names, sizes


def _allocation(
    p: PruneConfig, sizes: dict[str, int], sensitivity: list[dict]
) -> float | dict[str, float]:
    if p.allocation == "global":
        return p.ratio
    if p.allocation == "uniform":
        return {name: p.ratio for name in sizes}
    return ratios_from_sensitivity(sensitivity, p.ratio, sizes, max_ratio=p.max_layer_ratio)


def _merge_tables(*tables: dict[str, list[dict]]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for t in tables:
        for name, rows in t.items():
            out.setdefault(name, []).extend(rows)
    return out


def _score(
    ctx: TrialContext, model: nn.Module, max_batches: int | None, loader: DataLoader | None = None
) -> dict[str, float]:
    loss_fn = nn.CrossEntropyLoss()
    loader = ctx.val_loader if loader is None else loader
    return evaluate(model, loader, ctx.accelerator, loss_fn, max_batches=max_batches)


def _sensitivity_plan(
    ctx: TrialContext, p: PruneConfig, val_batches: int | None
) -> tuple[list[float], DataLoader | None, int | None]:
    """Ratios, loader and batch cap of the scan: layers x ratios evaluations, each on
    `sensitivity_samples` images (all when null) in at most `sensitivity_max_batches` batches."""
    if p.sensitivity_samples is None:
        batches = p.sensitivity_max_batches if p.sensitivity_max_batches else val_batches
        return list(p.sensitivity_ratios), None, batches
    val = ctx.data.val
    few = Subset(val, range(min(p.sensitivity_samples, len(val))))  # type: ignore[arg-type]
    loader = make_loader(few, ctx.cfg.optim.batch_size, shuffle=False, cfg=ctx.cfg.dataset)
    return list(p.sensitivity_ratios), loader, p.sensitivity_max_batches


def run(config: dict[str, Any], reporter: Reporter) -> None:
    cfg = TrialConfig.model_validate(config)
    p = cfg.prune
    ctx, model, init = _start(cfg)
    val_batches = cfg.optim.max_val_batches
    img = cfg.model.img_size
    example = torch.randn(1, 3, img, img, device=ctx.device)

    # The dense model: accuracy, figures, profile, and the histogram bins every phase shares.
    targets, sizes = _targets(model, p.method, example)
    dense_numel = {n: targeted_numel(model, [n]) for n in targets}
    dense_targeted = sum(dense_numel.values())
    edges = histogram_edges(model, targets, p.histogram_bins)
    weights = weight_histogram_rows(model, edges, "before")
    dense = _tagged(_score(ctx, model, val_batches), "dense")
    dense_figures = sparsity_figures(model, targets, dense_targeted)
    dense.update(
        _tagged({k: v for k, v in dense_figures.items() if k != "prune/sparsity"}, "dense")
    )
    dense_static, dense_tables = static_profile(model, cfg, ctx.device, tag="dense")
    sensitivity, sensitivity_s = _scan(ctx, model, example)
    masks, prune_s = _prune(model, p, _allocation(p, sizes, sensitivity), example)

    # The pruned model as it now runs: untagged keys, so MACs and latency are the real ones.
    pruned = _tagged(_score(ctx, model, val_batches), "pruned")
    static, tables = static_profile(model, cfg, ctx.device)
    figures = sparsity_figures(model, targets, dense_targeted)
    weights += weight_histogram_rows(model, edges, "pruned")
    facts = {
        **static,
        **figures,
        **pruned,
        **dense,
        **dense_static,
        **init,
        "prune/targeted_params": dense_targeted,
        "prune/sensitivity_s": sensitivity_s,
        "prune/prune_s": prune_s,
        **ctx.facts(),
    }
    tables = _merge_tables(
        tables,
        dense_tables,
        {"weights": weights, "pruned_layers": layer_rows(model, dense_numel)},
        {"sensitivity": sensitivity} if sensitivity else {},
    )
    _recover(ctx, model, reporter, masks, facts, tables, pruned, (targets, dense_targeted, edges))


def _start(cfg: TrialConfig) -> tuple[TrialContext, nn.Module, dict[str, Any]]:
    """Seed, data, the trained model to prune (warned about when it is not trained)."""
    setup = TrialSetup.begin(cfg)
    model, init = start_model(cfg, setup.num_classes)
    ctx = setup.with_model(model)
    if not init["init/from_weights"]:
        warnings.warn(
            "prune_recover: no trained weights (model.pretrained is false and no "
            "finetune.checkpoint); pruning a randomly initialised model: costs are real, "
            "accuracies are not",
            stacklevel=1,
        )
    model.to(ctx.device)
    return ctx, model, init


def _scan(
    ctx: TrialContext, model: nn.Module, example: torch.Tensor
) -> tuple[list[dict], float | None]:
    """The sensitivity scan's rows and its time (none when `prune.sensitivity` is off)."""
    p = ctx.cfg.prune
    if not p.sensitivity:
        return [], None
    t0 = time.perf_counter()
    scan_ratios, scan_loader, batches = _sensitivity_plan(ctx, p, ctx.cfg.optim.max_val_batches)
    rows = sensitivity_scan(
        model,
        lambda m: _score(ctx, m, batches, scan_loader),
        scan_ratios,
        method=p.method,
        example_inputs=example,
        round_to=p.round_to,
    )
    return rows, time.perf_counter() - t0


def _prune(model: nn.Module, p: Any, ratios: Any, example: torch.Tensor) -> tuple[Any, float]:
    """Prune by `ratios`; the masks (unstructured) and the time it took."""
    t0 = time.perf_counter()
    masks = None
    if p.method == "unstructured":
        masks = unstructured_prune(model, ratios)
    else:
        structured_prune(model, example, ratios, round_to=p.round_to)
    return masks, time.perf_counter() - t0


def _recover(
    ctx: TrialContext,
    model: nn.Module,
    reporter: Reporter,
    masks: Any,
    facts: dict[str, Any],
    tables: Tables,
    pruned: dict[str, Any],
    figures_of: tuple[Any, int, Any],
) -> None:
    """Fine-tune the pruned model back (or report it as pruned), then its recovered figures."""
    p, val_batches = ctx.cfg.prune, ctx.cfg.optim.max_val_batches
    targets, dense_targeted, edges = figures_of
    if p.recover_epochs == 0:
        val = {k.removeprefix("pruned/"): v for k, v in pruned.items()}
        reporter.report({"epoch": 0, **val}, facts=facts, tables=tables)
        return

    if masks is not None:
        hold_masks(model, masks)
    fit(ctx, model, reporter, epochs=p.recover_epochs, facts=facts, tables=tables)
    make_permanent(model)
    recovered = _tagged(_score(ctx, model, val_batches), "recovered")
    recovered["recovered/prune/sparsity"] = sparsity_figures(model, targets, dense_targeted)[
        "prune/sparsity"
    ]
    reporter.report_final(
        recovered, tables={"weights": weight_histogram_rows(model, edges, "recovered")}
    )
