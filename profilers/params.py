"""Parameter counts and model size, read from the module as it stands (after pruning or merging).

| key                        | unit | meaning                                                            |
|----------------------------|------|--------------------------------------------------------------------|
| `params/total`             | int  | elements in all parameters (shared tensors counted once)           |
| `params/trainable`         | int  | elements in parameters with `requires_grad`                        |
| `params/trainable_pct`     | %    | `100 * trainable / total` (None for a model without parameters)    |
| `model/size_mb`            | MiB  | bytes of parameters and buffers / 2**20                            |
| `model/params_mb`          | MiB  | bytes of parameters alone                                          |
| `model/buffers_mb`         | MiB  | bytes of buffers alone (BatchNorm statistics, pruning masks, ...)  |
| `model/size_mb_<dtype>`    | MiB  | parameters and buffers of one dtype, e.g. `model/size_mb_float32`  |

Bytes are `numel * element_size` of the tensors in memory: a pruned weight full of zeros still
costs its full size (dense storage), and `torch.nn.utils.prune` adds a `weight_orig` parameter plus a
`weight_mask` buffer until `prune.remove` is called.
"""

from __future__ import annotations

from collections import defaultdict

from torch import nn

from profilers.memory import MIB
from profilers.metric_registry import INT, F, declare

declare(
    __name__,
    {
        "params/total": (INT, "count", "elements of all parameters, shared (tied) tensors once"),
        "params/trainable": (INT, "count", "elements of the parameters with requires_grad"),
        "params/trainable_pct": (F, "%", "100 x trainable / total (null without parameters)"),
        "model/size_mb": (F, "MiB", "bytes of parameters + buffers (dense storage)"),
        "model/params_mb": (F, "MiB", "bytes of the parameters"),
        "model/buffers_mb": (F, "MiB", "bytes of the buffers (BatchNorm statistics, masks, ...)"),
        "model/size_mb_*": (F, "MiB", "bytes by dtype, e.g. model/size_mb_float32"),
    },
)


def _unique(tensors: list) -> list:
    seen: set[int] = set()
    out = []
    for t in tensors:
        if t is None or id(t) in seen:
            continue
        seen.add(id(t))
        out.append(t)
    return out


def param_metrics(model: nn.Module) -> dict[str, float | int | None]:
    """The keys above for `model`."""
    params = _unique(list(model.parameters()))
    buffers = _unique(list(model.buffers()))
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    by_dtype: dict[str, int] = defaultdict(int)
    for t in params + buffers:
        by_dtype[str(t.dtype).removeprefix("torch.")] += t.numel() * t.element_size()
    params_bytes = sum(p.numel() * p.element_size() for p in params)
    buffers_bytes = sum(b.numel() * b.element_size() for b in buffers)
    out: dict[str, float | int | None] = {
        "params/total": total,
        "params/trainable": trainable,
        "params/trainable_pct": 100.0 * trainable / total if total else None,
        "model/size_mb": (params_bytes + buffers_bytes) / MIB,
        "model/params_mb": params_bytes / MIB,
        "model/buffers_mb": buffers_bytes / MIB,
    }
    for dtype, nbytes in sorted(by_dtype.items()):
        out[f"model/size_mb_{dtype}"] = nbytes / MIB
    return out
