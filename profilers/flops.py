"""Forward MACs/FLOPs and training-step FLOPs per input size, with the counters' caveats beside them.

Two counters, on purpose:

- **fvcore** `FlopCountAnalysis` (jit trace) reports one multiply-add as one "flop": that is a MAC,
  stored as `gmacs`. It counts conv, linear/matmul/einsum, norms, pooling and upsampling; it skips
  element-wise ops (activations, residual adds, softmax), which it lists as *unsupported*: the list is
  kept in `flops/unsupported_ops`, never hidden. fvcore has no handler for
  `aten::scaled_dot_product_attention` (timm ViTs' fused attention); `sdpa_flop_jit` below counts it
  as the two matmuls it fuses, `q @ k^T` and `attn @ v`, so fused and unfused attention count alike.
- **torch** `FlopCounterMode` (dispatch) counts true FLOPs (2 per MAC) of matmuls and convolutions,
  forward and backward. It has no formula for the CPU attention kernel
  (`_scaled_dot_product_flash_attention_for_cpu`); `SDPA_CPU_FORMULAS` adds one.

| key / column                | unit   | meaning                                                              |
|-----------------------------|--------|----------------------------------------------------------------------|
| `flops/fwd_gmacs`           | GMAC   | fvcore forward multiply-adds per sample (batch 1), at `flops/input_size` |
| `flops/fwd_gflops`          | GFLOP  | FlopCounterMode forward FLOPs per sample, same input                 |
| `flops/train_step_gflops`   | GFLOP  | FlopCounterMode forward + backward FLOPs per sample (no optimizer step); the backward computes weight gradients only for trainable parameters, as training does |
| `flops/crosscheck_ratio`    | ratio  | `fwd_gflops / (2 * fwd_gmacs)`: ~1; below 1 by the share of norm/pooling MACs that only fvcore counts |
| `flops/input_size`          | px     | side length the flat figures above were counted at                  |
| `flops/input_shape`         | str    | the input tensor's shape, e.g. `1x3x224x224`                         |
| `flops/counter`             | str    | the counters behind the figures                                      |
| `flops/unsupported_ops`     | str    | ops fvcore skipped with their call counts (`aten::add=25; ...`), empty when none |

`flops_rows` returns one row per input size for the `flops` table, with the same figures
(`fwd_gmacs`, `fwd_gflops`, `train_step_gflops`, `crosscheck_ratio`, `input_size`, `input_shape`,
`counter`, `unsupported_ops`, `status`, `error`). A size the model cannot run gets status `error`
and null figures, never 0.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from profilers.metric_registry import INT, F, S, declare, declare_table

declare(
    __name__,
    {
        "flops/fwd_gmacs": (F, "GMAC/sample", "forward multiply-accumulates at batch 1 (fvcore)"),
        "flops/fwd_gflops": (
            F,
            "GFLOP/sample",
            "forward FLOPs at batch 1 (torch FlopCounterMode, 2 per MAC)",
        ),
        "flops/train_step_gflops": (
            F,
            "GFLOP/sample",
            "forward + backward FLOPs of one training sample",
        ),
        "flops/crosscheck_ratio": (
            F,
            "ratio",
            "fwd_gflops / (2 x fwd_gmacs): ~1 when both counters agree",
        ),
        "flops/input_size": (INT, "px", "input side the figures were counted at"),
        "flops/input_shape": (S, "", "input shape counted, e.g. 1x3x224x224"),
        "flops/counter": (S, "", "the counters behind the figures"),
        "flops/unsupported_ops": (S, "", "ops fvcore skipped, with call counts"),
        "flops/error": (S, "", "why a counter failed (its figure is null)"),
    },
)
declare_table(
    "flops",
    __name__,
    {
        "tag": (
            S,
            "",
            "'' for the model the trial reports on; dense, merged, ... for earlier states",
        ),
        "input_size": (INT, "px", "input side"),
        "input_shape": (S, "", "input shape counted"),
        "counter": (S, "", "the counters behind the figures"),
        "fwd_gmacs": (F, "GMAC/sample", "forward MACs (fvcore)"),
        "fwd_gflops": (F, "GFLOP/sample", "forward FLOPs (FlopCounterMode)"),
        "train_step_gflops": (F, "GFLOP/sample", "forward + backward FLOPs"),
        "crosscheck_ratio": (F, "ratio", "fwd_gflops / (2 x fwd_gmacs)"),
        "unsupported_ops": (S, "", "ops fvcore skipped"),
        "status": (S, "", "ok or error"),
        "error": (S, "", "why a count failed"),
    },
)


COUNTER = "fvcore FlopCountAnalysis (MACs, +SDPA handler); torch FlopCounterMode (FLOPs, +CPU SDPA)"


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for aten::scaled_dot_product_attention: MACs of `q @ k^T` and `attn @ v`.

    q: [..., L, E], k: [..., S, E], v: [..., S, Ev]; leading dims broadcast (grouped-query
    attention repeats k/v heads), so the query's leading dims set the count. Softmax, scaling and the
    mask are element-wise and left out, as fvcore leaves them out of explicit attention.
    """
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    length, dim = q[-2], q[-1]
    return batch * length * k[-2] * (dim + v[-1])


def _as_4d(shape: Any) -> tuple[int, ...]:
    """torch's SDPA formulas take [batch, heads, length, dim]; fold or pad other ranks into it."""
    dims = tuple(shape)
    if len(dims) == 3:
        return (dims[0], 1, dims[1], dims[2])
    if len(dims) > 4:
        return (math.prod(dims[:-3]), *dims[-3:])
    return dims


def _sdpa_cpu_fwd(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(_as_4d(q), _as_4d(k), _as_4d(v))


def _sdpa_cpu_bwd(
    grad_out: Any, q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(_as_4d(grad_out), _as_4d(q), _as_4d(k), _as_4d(v))


SDPA_CPU_FORMULAS: dict[Any, Callable[..., int]] = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_fwd,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_bwd,
}


def fvcore_macs(model: nn.Module, x: torch.Tensor) -> tuple[int, dict[str, int]]:
    """fvcore's count (MACs) of one forward on `x`, and the ops it skipped with their call counts."""
    with warnings.catch_warnings():
        # fvcore's import calls torch.jit.script, which torch now flags as deprecated
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, x)
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    # fvcore logs each skipped op at WARNING; the list is returned instead.
    logger = logging.getLogger("fvcore.nn.jit_analysis")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        total = int(analysis.total())
        skipped = dict(sorted(analysis.unsupported_ops().items()))
    finally:
        logger.setLevel(level)
    return total, skipped


def torch_flops(model: nn.Module, x: torch.Tensor, *, backward: bool) -> int:
    """FlopCounterMode's FLOPs of one forward (and backward when asked) on `x`.

    The backward asks autograd for the gradients of the trainable parameters only, like a
    training step, and leaves every `.grad` untouched.
    """
    from torch.utils.flop_counter import FlopCounterMode

    trainable = [p for p in model.parameters() if p.requires_grad]
    with FlopCounterMode(display=False, custom_mapping=SDPA_CPU_FORMULAS) as counter:
        if backward and trainable:
            with torch.enable_grad():
                out = model(x)
                out = out if isinstance(out, torch.Tensor) else out[0]
                torch.autograd.grad(out.float().sum(), trainable, allow_unused=True)
        else:
            with torch.no_grad():
                model(x)
    return int(counter.get_total_flops())


def _format_ops(ops: dict[str, int]) -> str:
    return "; ".join(f"{name}={n}" for name, n in ops.items())


def count_flops(
    model: nn.Module,
    input_size: int,
    *,
    device: torch.device | str = "cpu",
    train_step: bool = True,
    channels_last: bool = False,
    in_chans: int = 3,
) -> dict[str, Any]:
    """One row of the `flops` table: counts per sample (batch 1) at `input_size` x `input_size`.

    Counted in eval mode (dropout off, BatchNorm statistics untouched; the counted ops are the
    same as in training) with fp32 inputs; the model's mode is restored afterwards.
    """
    shape = (1, in_chans, input_size, input_size)
    row: dict[str, Any] = {
        "input_size": input_size,
        "input_shape": "x".join(str(s) for s in shape),
        "counter": COUNTER,
        "fwd_gmacs": None,
        "fwd_gflops": None,
        "train_step_gflops": None,
        "crosscheck_ratio": None,
        "unsupported_ops": None,
        "status": "ok",
        "error": None,
    }
    inner = getattr(model, "_orig_mod", model)  # count the eager module, not a compiled wrapper
    x = torch.randn(shape, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    was_training = inner.training
    inner.eval()
    errors: list[str] = []
    try:
        try:
            macs, skipped = fvcore_macs(inner, x)
            row["fwd_gmacs"] = macs / 1e9
            row["unsupported_ops"] = _format_ops(skipped)
        except Exception as exc:  # a failed count is a null figure with its reason
            errors.append(f"fvcore: {type(exc).__name__}: {exc}")
        try:
            row["fwd_gflops"] = torch_flops(inner, x, backward=False) / 1e9
            if train_step:
                row["train_step_gflops"] = torch_flops(inner, x, backward=True) / 1e9
        except Exception as exc:
            errors.append(f"FlopCounterMode: {type(exc).__name__}: {exc}")
    finally:
        inner.train(was_training)
    if row["fwd_gmacs"] and row["fwd_gflops"] is not None:
        row["crosscheck_ratio"] = row["fwd_gflops"] / (2 * row["fwd_gmacs"])
    if errors:
        row["status"] = "error"
        row["error"] = " | ".join(e[:500] for e in errors)
    return row


def flops_rows(
    model: nn.Module,
    input_sizes: list[int],
    *,
    device: torch.device | str = "cpu",
    train_step: bool = True,
    channels_last: bool = False,
) -> list[dict[str, Any]]:
    """`count_flops` for each size."""
    return [
        count_flops(model, s, device=device, train_step=train_step, channels_last=channels_last)
        for s in input_sizes
    ]


def flops_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """The flat `flops/*` keys of one `flops` row (the trial's primary input size)."""
    out = {
        "flops/fwd_gmacs": row["fwd_gmacs"],
        "flops/fwd_gflops": row["fwd_gflops"],
        "flops/train_step_gflops": row["train_step_gflops"],
        "flops/crosscheck_ratio": row["crosscheck_ratio"],
        "flops/input_size": row["input_size"],
        "flops/input_shape": row["input_shape"],
        "flops/counter": row["counter"],
        "flops/unsupported_ops": row["unsupported_ops"],
    }
    if row["error"]:
        out["flops/error"] = row["error"]
    return out
