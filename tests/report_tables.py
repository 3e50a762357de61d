"""Small, realistic Parquet tables of three sweeps, written as the sweep's Parquet sink lays them out.

One part file per trial in `<out>/<table>/`; every row has `sweep` and `trial_id`; the trial's
config as dotted-key columns; metric names per DESIGN.md. Values follow the relations real runs
show (val/acc rising over epochs, MACs falling with structured pruning ratio, trainable share
linear in LoRA rank) so the report's plots and findings have something true to say.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ENV = {
    "env/torch": "2.14.1",
    "env/timm": "1.0.31",
    "env/python": "3.11.2",
    "env/device": "cpu",
    "env/cpu": "x86_64 (2 cores)",
}


def _write(out: Path, table: str, trial_id: str, rows: list[dict]) -> None:
    (out / table).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / table / f"{trial_id}.parquet")


def _epoch_rows(
    sweep: str,
    trial_id: str,
    config: dict,
    *,
    epochs: int,
    final_acc: float,
    step_ms: float,
    gpu: bool,
    rng: np.random.Generator,
) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        frac = e / epochs
        val_acc = round(final_acc * (0.55 + 0.45 * frac) + rng.normal(0, 0.004), 4)
        train_acc = min(0.999, val_acc + 0.03 * frac)
        rows.append(
            {
                "sweep": sweep,
                "trial_id": trial_id,
                "epoch": e,
                "stage": None,
                "smoke": False,
                "schema_version": 1,
                **config,
                "train/loss": 2.3 * (1 - 0.8 * frac) + rng.uniform(0, 0.05),
                "train/acc": train_acc,
                "val/loss": 2.3 * (1 - 0.75 * frac) + rng.uniform(0, 0.05),
                "val/acc": val_acc,
                "val/f1_macro": round(val_acc - 0.012, 4),
                "time/epoch_s": 1000 * step_ms / 1e3 * 22 / 1000 + rng.uniform(0, 0.05),
                "time/samples_per_s": 64 * 1000 / step_ms,
                "time/step_ms_p50": step_ms + rng.uniform(0, 1),
                "mem/cpu_peak_rss_mb": 900 + 40 * e + step_ms,
                "mem/gpu_peak_allocated_mb": 1500.0 + 3 * step_ms if gpu else None,
                "mem/gpu_peak_reserved_mb": 2048.0 + 4 * step_ms if gpu else None,
            }
        )
    return rows


def _trial_row(
    sweep: str, trial_id: str, config: dict, epoch_rows: list[dict], static: dict
) -> dict:
    last = epoch_rows[-1]
    metrics = {k: v for k, v in last.items() if "/" in k}
    best = {
        "best/val/acc": max(r["val/acc"] for r in epoch_rows),
        "best/val/f1_macro": max(r["val/f1_macro"] for r in epoch_rows),
        "best/val/loss": min(r["val/loss"] for r in epoch_rows),
    }
    return {
        "sweep": sweep,
        "trial_id": trial_id,
        "status": "ok",
        "error": None,
        "smoke": False,
        "schema_version": 1,
        **config,
        **metrics,
        **best,
        **static,
        **ENV,
    }


def _latency_rows(sweep: str, trial_id: str, base_ms: float) -> list[dict]:
    rows = []
    for size in (32, 64):
        for bs in (1, 8):
            p50 = base_ms * (size / 32) ** 2 * (1 + 0.55 * (bs - 1))
            rows.append(
                {
                    "sweep": sweep,
                    "trial_id": trial_id,
                    "input_size": size,
                    "batch_size": bs,
                    "precision": "fp32",
                    "tag": "",
                    "latency_ms_p50": p50,
                    "latency_ms_p90": p50 * 1.08,
                    "latency_ms_p99": p50 * 1.2,
                    "latency_ms_stdev": p50 * 0.04,
                    "throughput_samples_per_s": 1000 * bs / p50,
                    "exclusive": True,
                }
            )
    return rows


def write_quickstart(out: Path, rng: np.random.Generator, *, gpu: bool = True) -> None:
    """`train` on digits: two models x two learning rates, 3 epochs, with latency rows."""
    models = {
        "resnet18": (11.18e6, 0.0372, 1.9, 14.0),
        "vit_tiny_patch16_224": (5.5e6, 0.0913, 3.1, 21.0),
    }
    i = 0
    for model, (params, gmacs, lat_ms, step_ms) in models.items():
        for lr in (1e-3, 3e-3):
            trial_id = f"qs01_{i:05d}"
            config = {
                "trainable": "train",
                "model.name": model,
                "model.img_size": 32,
                "dataset.name": "digits",
                "optim.lr": lr,
                "optim.batch_size": 64,
                "optim.epochs": 3,
                "precision": "fp32",
                "device": "cpu",
            }
            acc = (0.93 if model == "resnet18" else 0.86) - (0.04 if lr == 3e-3 else 0)
            ep = _epoch_rows(
                "quickstart",
                trial_id,
                config,
                epochs=3,
                final_acc=acc,
                step_ms=step_ms,
                gpu=gpu,
                rng=rng,
            )
            static = {
                "params/total": int(params),
                "params/trainable": int(params),
                "params/trainable_pct": 100.0,
                "flops/fwd_gmacs": gmacs,
                "flops/fwd_gflops": 2 * gmacs,
                "model/size_mb": params * 4 / 2**20,
            }
            _write(out, "epochs", trial_id, ep)
            _write(
                out, "trials", trial_id, [_trial_row("quickstart", trial_id, config, ep, static)]
            )
            _write(out, "latency", trial_id, _latency_rows("quickstart", trial_id, lat_ms))
            i += 1


def write_lora(out: Path, rng: np.random.Generator) -> None:
    """`lora` ranks 0 (full fine-tune), 4, 8, 16 on a tiny ViT."""
    base = 5_526_346
    for i, rank in enumerate((0, 4, 8, 16)):
        trial_id = f"lora1_{i:05d}"
        trainable = base if rank == 0 else 3_850 + 18_432 * rank
        config = {
            "trainable": "lora",
            "model.name": "vit_tiny_patch16_224",
            "model.img_size": 32,
            "dataset.name": "digits",
            "optim.lr": 1e-3,
            "lora.rank": rank,
            "lora.alpha": 16.0,
            "precision": "fp32",
            "device": "cpu",
        }
        acc = 0.90 if rank == 0 else 0.84 + 0.01 * np.log2(rank)
        step = 30.0 if rank == 0 else 22.0 + 0.1 * rank
        ep = _epoch_rows(
            "lora_ranks",
            trial_id,
            config,
            epochs=2,
            final_acc=acc,
            step_ms=step,
            gpu=False,
            rng=rng,
        )
        static = {
            "params/total": base + (0 if rank == 0 else trainable - 3_850),
            "params/trainable": trainable,
            "params/trainable_pct": 100.0 * trainable / base,
            "flops/fwd_gmacs": 0.0913,
        }
        _write(out, "epochs", trial_id, ep)
        _write(out, "trials", trial_id, [_trial_row("lora_ranks", trial_id, config, ep, static)])


LAYERS = ("conv1", "layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv2", "fc")


def write_prune(out: Path, rng: np.random.Generator) -> None:
    """`prune_recover` on resnet18: two methods x three ratios, sensitivity and weight histograms.

    No `recovered/val/acc`: the report must fall back to the best `val/acc` of recovery.
    """
    i = 0
    for method in ("unstructured", "structured"):
        for ratio in (0.2, 0.5, 0.8):
            trial_id = f"prn1_{i:05d}"
            config = {
                "trainable": "prune_recover",
                "model.name": "resnet18",
                "model.img_size": 32,
                "dataset.name": "digits",
                "prune.method": method,
                "prune.ratio": ratio,
                "precision": "fp32",
                "device": "cpu",
            }
            hurt = ratio**2 * (0.5 if method == "unstructured" else 0.9)
            ep = _epoch_rows(
                "prune_recover",
                trial_id,
                config,
                epochs=2,
                final_acc=0.93 - hurt * 0.2,
                step_ms=14.0,
                gpu=False,
                rng=rng,
            )
            keep = 1 - ratio if method == "structured" else 1.0
            static = {
                "params/total": int(11.18e6 * keep),
                "flops/fwd_gmacs": 0.0372 * keep,
                "prune/sparsity": ratio if method == "unstructured" else 0.0,
                "pruned/val/acc": 0.93 - hurt,
                "dense/val/acc": 0.93,
                "dense/flops/fwd_gmacs": 0.0372,
                "latency/b1_ms_p50": 1.9 * (keep if method == "structured" else 1.0),
                "dense/latency/b1_ms_p50": 1.9,
            }
            _write(out, "epochs", trial_id, ep)
            _write(
                out, "trials", trial_id, [_trial_row("prune_recover", trial_id, config, ep, static)]
            )
            if method == "unstructured" and ratio == 0.5:
                _write(out, "sensitivity", trial_id, _sensitivity_rows(trial_id))
                _write(out, "weights", trial_id, _weight_rows(trial_id, ratio, rng))
            i += 1


def _sensitivity_rows(trial_id: str) -> list[dict]:
    rows = []
    for depth, layer in enumerate(LAYERS):
        for ratio in (0.1, 0.3, 0.5, 0.7, 0.9):
            drop = ratio**3 * (0.8 if layer in ("conv1", "fc") else 0.15 + 0.02 * depth)
            rows.append(
                {
                    "sweep": "prune_recover",
                    "trial_id": trial_id,
                    "layer": layer,
                    "kind": "weights",
                    "method": "unstructured",
                    "ratio": ratio,
                    "removed": ratio,
                    "base_acc": 0.93,
                    "acc": 0.93 - drop,
                    "acc_drop": drop,
                }
            )
    return rows


def _weight_rows(trial_id: str, ratio: float, rng: np.random.Generator) -> list[dict]:
    rows = []
    edges = np.linspace(-0.3, 0.3, 41)
    for layer in LAYERS[:4]:
        w = rng.normal(0, 0.08, 4000)
        cut = np.quantile(np.abs(w), ratio)
        pruned = np.where(np.abs(w) < cut, 0.0, w)
        recovered = np.where(pruned == 0, 0.0, pruned + rng.normal(0, 0.01, w.size))
        for phase, values in (("before", w), ("pruned", pruned), ("recovered", recovered)):
            # As the trainable writes them: exact zeros (pruned weights) left out.
            counts, _ = np.histogram(values[values != 0], bins=edges)
            for left, right, n in zip(edges[:-1], edges[1:], counts, strict=True):
                rows.append(
                    {
                        "sweep": "prune_recover",
                        "trial_id": trial_id,
                        "layer": layer,
                        "phase": phase,
                        "bin_left": float(left),
                        "bin_right": float(right),
                        "count": int(n),
                    }
                )
    return rows


def write_all(out: Path, seed: int = 0) -> Path:
    """All three sweeps into one output directory, as `--output out` for each would leave it."""
    rng = np.random.default_rng(seed)
    write_quickstart(out, rng)
    write_lora(out, rng)
    write_prune(out, rng)
    return out


def read(out: Path, table: str) -> pd.DataFrame:
    return pd.concat(
        [pd.read_parquet(p) for p in sorted((out / table).glob("*.parquet"))], ignore_index=True
    )


SEED_LRS = (1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 3e-2)


def write_seeds(
    out: Path,
    rng: np.random.Generator,
    *,
    lrs: tuple[float, ...] = SEED_LRS,
    seeds: int = 24,
    epochs: int = 2,
    sweep: str = "seeds",
    step_ms: float = 20.0,
    slowdown: float = 1.0,
    batch_size: int = 64,
) -> Path:
    """One model, `len(lrs)` learning rates x `seeds` seeds (the issue's 8 x 24 = 192 trials),
    one latency size; accuracy peaks at lr 1e-3 with a seed-to-seed spread of ~1.5 points.
    `slowdown` multiplies every time figure (a planted regression for `compare`)."""
    i = 0
    for lr in lrs:
        peak = 0.9 - 0.05 * abs(np.log10(lr) + 3)
        for seed in range(seeds):
            trial_id = f"sd{i:05d}"
            config = {
                "trainable": "train",
                "model.name": "vit_tiny_patch16_224",
                "model.img_size": 32,
                "dataset.name": "digits",
                "optim.lr": lr,
                "optim.batch_size": batch_size,
                "optim.epochs": epochs,
                "seed": seed,
                "precision": "fp32",
                "device": "cpu",
            }
            ms = step_ms * slowdown * (1 + rng.normal(0, 0.03))
            ep = _epoch_rows(
                sweep,
                trial_id,
                config,
                epochs=epochs,
                final_acc=float(peak + rng.normal(0, 0.015)),
                step_ms=ms,
                gpu=False,
                rng=rng,
            )
            for row in ep:  # time figures from this trial's step time, noise of a few %
                row["time/epoch_s"] = 22 * ms / 1e3 * (1 + rng.normal(0, 0.02))
            static = {
                "params/total": 5_500_000,
                "params/trainable": 5_500_000,
                "flops/fwd_gmacs": 0.0913,
            }
            _write(out, "epochs", trial_id, ep)
            _write(out, "trials", trial_id, [_trial_row(sweep, trial_id, config, ep, static)])
            lat = [
                r for r in _latency_rows(sweep, trial_id, 3.1 * slowdown) if r["input_size"] == 32
            ]
            _write(out, "latency", trial_id, [r for r in lat if r["batch_size"] == 1])
            i += 1
    return out
