"""`lora`: LoRA fine-tuning (peft) of a model that starts from weights; rank 0 = full fine-tune.

One trial:
1. start weights as in `finetune` (`init/*` keys), then `apply_lora` (`lora.rank`, `alpha`,
   `dropout`, `target_modules`; the head stays trainable; rank 0 trains everything);
2. before training: parameter counts, FLOPs of the model as trained (adapters unmerged; the
   training-step count feeds MFU) and the LoRA keys of `trainables.adapters.lora` (trainable
   share, optimizer state saved);
3. `fit`: per-epoch loss/accuracy, step time, throughput, peak memory;
4. after training, in the trial-end report (`reporter.report_final`): latency and inference
   memory of the trained model as it is (adapters unmerged, untagged keys), then the adapters are
   merged into the base weights and the merged model is profiled again under the tag `merged`
   (`merged/latency/...`, `merged/flops/...`; table rows carry `tag: merged`). Rank 0 has nothing
   to merge: its untagged numbers are the base model's, the yardstick for both.

| key                       | unit | meaning                                                        |
|---------------------------|------|----------------------------------------------------------------|
| lora/merge_max_abs_diff   | -    | max abs difference of the logits, unmerged vs merged (fp32)    |
| merged/<profile key>      | -    | the static profile of the merged model (rank > 0 only)         |
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from profilers.metric_registry import F, declare
from trainables.adapters.lora import apply_lora, count_params, lora_metrics, merge_lora
from trainables.config import TrialConfig
from trainables.loop.fit import fit
from trainables.loop.profiling import static_profile
from trainables.loop.reporting import Reporter, Tables
from trainables.loop.setup import TrialContext, TrialSetup
from trainables.models.heads import unwrap
from trainables.models.start_weights import start_model

declare(
    __name__,
    {
        "lora/merge_max_abs_diff": (
            F,
            "abs",
            "max |logits unmerged - merged| after the merge (fp32)",
        )
    },
)

MERGE_CHECK_IMAGES = 2


def run(config: dict[str, Any], reporter: Reporter) -> None:
    cfg = TrialConfig.model_validate(config)
    if cfg.finetune.freeze_backbone:
        raise ValueError(
            "finetune.freeze_backbone: true does not apply to the lora trainable (LoRA freezes the "
            "base by construction; lora.rank: 0 trains everything); use trainable: finetune for "
            "a linear probe"
        )
    setup = TrialSetup.begin(cfg)
    model, init = start_model(cfg, setup.num_classes)
    # The pipeline comes from the plain model (peft keeps timm's pretrained_cfg underneath).
    ctx = setup.with_model(model)
    base_params = count_params(model)[0]
    model = apply_lora(model, cfg.lora)
    facts, tables = static_profile(model, _only(cfg, "params", "flops"), ctx.device)
    facts.update(lora_metrics(model, base_params, cfg.optim))
    facts.update(init)
    facts.update(ctx.facts())
    before_s = facts.get("profile/static_s") or 0.0
    fit(ctx, model, reporter, facts=facts, tables=tables)
    after, after_tables = _profile_trained(ctx, model, before_s)
    reporter.report_final(after, tables=after_tables)


def _profile_trained(
    ctx: TrialContext, model: nn.Module, before_s: float
) -> tuple[dict[str, Any], Tables]:
    """Latency/memory of the trained model, then merge and profile the merged model."""
    cfg = ctx.cfg
    # Training is over: the autocast wrapper Accelerate put on the forward can go, so each
    # profile runs in the precision it asks for.
    plain = unwrap(model, peft=False, drop_precision_hooks=True)
    metrics, tables = static_profile(plain, _only(cfg, "latency", "memory"), ctx.device)
    # Untagged profile time covers both halves of the trained model's profile.
    metrics["profile/static_s"] = before_s + (metrics.get("profile/static_s") or 0.0)
    if cfg.lora.rank == 0:
        return metrics, tables
    x = torch.stack([ctx.data.val[i][0] for i in range(MERGE_CHECK_IMAGES)]).to(ctx.device)
    plain.eval()
    with torch.no_grad():
        unmerged = plain(x).float()
        merged_model = merge_lora(plain)
        merged = merged_model(x).float()
    metrics["lora/merge_max_abs_diff"] = (unmerged - merged).abs().max().item()
    merged_cfg = _only(cfg, "params", "flops", "latency", "memory")
    if merged_cfg.profilers.flops is not None:
        merged_cfg.profilers.flops.train_step = False  # the merged model is for inference
    more, more_tables = static_profile(merged_model, merged_cfg, ctx.device, tag="merged")
    metrics.update(more)
    return metrics, _join(tables, more_tables)


def _only(cfg: TrialConfig, *keep: str) -> TrialConfig:
    """`cfg` with every profiler outside `keep` switched off."""
    out = cfg.model_copy(deep=True)
    for name in type(out.profilers).model_fields:
        if name not in keep and name != "time":
            setattr(out.profilers, name, None)
    return out


def _join(a: Tables | None, b: Tables | None) -> Tables:
    out: Tables = {k: list(v) for k, v in (a or {}).items()}
    for k, rows in (b or {}).items():
        out.setdefault(k, []).extend(rows)
    return out
