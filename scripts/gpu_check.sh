#!/usr/bin/env bash
# The checks that need a GPU, run on a lent one (Python 3.12, torch, timm, accelerate, peft,
# pyarrow, pandas; no Ray, no MLflow, no network), in under 8 minutes:
#   1. the wheels of scripts/gpu_wheels.sh (carried in .whl/) installed into a target folder;
#   2. `pytest -m gpu` on the test files that have GPU tests, with Ray and MLflow hidden;
#   3. the bench trainable on ViT-B/16 at 224 px: fp32 and bf16, batch 1 and 32, inference and
#      training (`python -m orchestrator trial`, Parquet under $OUT/vit_bench);
#   4. the bench stage of sweeps/lora_ranks.yaml, every rank (Parquet under $OUT/lora_bench);
#   5. the LoRA seed's table (002, ViTscale) beside the seed's own RTX A6000 figures.
# Everything printed is also in $OUT/gpu_check.log.
#
#   here:   bash scripts/gpu_wheels.sh
#           run(carry=[".whl"], timeout_s=540, command="bash scripts/gpu_check.sh")
#   on CPU: bash scripts/gpu_check.sh --cpu-dry-run     (or LVM_GPU_DRY_RUN=1; everything shrunk)
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=${LVM_GPU_DRY_RUN:-0}
[[ ${1:-} == --cpu-dry-run ]] && DRY=1
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
STATUS=0
step() { echo; echo "== $*"; }
failed() { echo "FAILED: $*"; STATUS=1; }
T0=$SECONDS

if [[ $DRY == 1 ]]; then
  PY=${LVM_PY:-.venv/bin/python}
  DEVICE=cpu
else
  PY=${LVM_PY:-python3}
  DEVICE=cuda
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export LVMBENCH_LOCK_DIR="$OUT/.locks"
echo "gpu_check: $( [[ $DRY == 1 ]] && echo 'CPU dry run' || echo 'GPU run'), python $("$PY" -c 'import sys; print(sys.version.split()[0])'), out $OUT"

step "1. wheels from .whl/"
SITE=$(mktemp -d)/site
if [[ $DRY == 1 ]]; then
  # This Python is not 3.12: check that the wheels install together on CPython 3.12 manylinux.
  "$PY" -m pip install --dry-run --quiet --no-index --no-deps --only-binary=:all: --target "$SITE" \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 .whl/*.whl \
    && echo "the $(ls .whl/*.whl | wc -l) wheels of .whl/ install on CPython 3.12" \
    || failed "the wheels in .whl/ do not install on CPython 3.12 (run scripts/gpu_wheels.sh)"
else
  if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" .whl/*.whl \
      || failed "installing .whl/ (run scripts/gpu_wheels.sh here and carry .whl)"
  else  # no pip there: a wheel is a zip laid out for site-packages
    for w in .whl/*.whl; do "$PY" -m zipfile -e "$w" "$SITE" || failed "unpacking $w"; done
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PY' || failed "imports"
import importlib, sys
for name in ("torch", "timm", "accelerate", "peft", "pyarrow", "pandas", "pydantic", "fvcore",
             "torch_pruning", "sklearn", "pytest", "trainables.bench", "orchestrator.driver.single_trial"):
    mod = importlib.import_module(name)
    print(f"  {name:26s} {getattr(mod, '__version__', '')}")
import torch
print("  cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY

# Ray and MLflow hidden (None in sys.modules), as on the GPU machine.
HIDE='import sys; sys.modules.update(ray=None, mlflow=None)'

step "2. pytest -m gpu ($(( SECONDS - T0 )) s)"
# Files whose module-level imports need Ray or MLflow cannot be collected there: listed, left out.
GPU_TESTS=$("$PY" -c "$HIDE
import importlib, sys
for path in sys.argv[1:]:
    try:
        importlib.import_module(path.removesuffix('.py').replace('/', '.'))
        print(path)
    except ImportError as err:
        print(f'left out {path}: {err}', file=sys.stderr)
" $(grep -l "pytest.mark.gpu" tests/test_*.py))
timeout 200 "$PY" -c "$HIDE; import pytest; sys.exit(pytest.main(['-m', 'gpu', '-q', '-p', 'no:cacheprovider', *sys.argv[1:]]))" \
  $GPU_TESTS || failed "pytest -m gpu (exit $?)"

step "3. bench: ViT-B/16, 224 px, fp32 + bf16, batch 1 + 32 ($(( SECONDS - T0 )) s)"
if [[ $DRY == 1 ]]; then
  VIT='model: {name: vit_base_patch16_224, img_size: 64, kwargs: {depth: 1}}'
  BENCH='bench: {batch_sizes: [1, 4], precisions: [fp32, bf16], warmup: 1, steps: 3}'
  LAT='latency: {warmup: 1, repeats: 3}'
else
  VIT='model: {name: vit_base_patch16_224, img_size: 224}'
  BENCH='bench: {batch_sizes: [1, 32], precisions: [fp32, bf16], warmup: 10, steps: 50}'
  LAT='latency: {warmup: 10, repeats: 100}'
fi
cat >"$OUT/vit_bench.yaml" <<YAML
name: gpu_vit_bench
trainable: bench
$VIT
dataset: {name: synthetic, num_classes: 1000}
precision: fp32
device: $DEVICE
$BENCH
profilers: {$LAT}
resources: {cpu: 8, gpu: 1}
YAML
timeout 150 "$PY" -c "$HIDE; import runpy; sys.argv[0] = 'orchestrator'; runpy.run_module('orchestrator', run_name='__main__')" \
  trial "$OUT/vit_bench.yaml" --output "$OUT/vit_bench" || failed "ViT-B/16 bench (exit $?)"

step "4. bench stage of sweeps/lora_ranks.yaml ($(( SECONDS - T0 )) s)"
if [[ $DRY == 1 ]]; then LORA=(--index 0 2 --smoke); else LORA=(--index 0 1 2 3 4 5); fi
LORA_ARGS=(trial sweeps/lora_ranks.yaml --stage bench "${LORA[@]}" --output "$OUT/lora_bench")
[[ $DRY == 1 ]] || LORA_ARGS+=(--no-pretrained)
timeout 240 "$PY" -c "$HIDE; import runpy; sys.argv[0] = 'orchestrator'; runpy.run_module('orchestrator', run_name='__main__')" \
  "${LORA_ARGS[@]}" || failed "lora_ranks bench stage (exit $?)"

step "5. tables ($(( SECONDS - T0 )) s)"
"$PY" - "$OUT" <<'PY' || failed "tables"
import sys
from pathlib import Path

import pandas as pd

out = Path(sys.argv[1])
pd.set_option("display.width", 200)
# The seed's own figures (002, ViTscale README, RTX A6000, fp32, ViT-B/16, batch 32): baseline
# (full fine-tune) and the best LoRA ranks it named.
SEED = {
    "baseline": {"infer ms/sample": 4.62, "FPS": 216.5, "infer MiB": 453,
                 "train ms/batch": 271.64, "train samples/s": 117.8, "train MiB": 4720},
    "LoRA-8": {"FPS": 155.3},
    "LoRA-4": {"train samples/s": 118.8},
}


def mem(row):
    gpu = row.get("gpu_peak_allocated_mb")
    return gpu if pd.notna(gpu) else row.get("cpu_peak_rss_mb")


vit = out / "vit_bench"
if (vit / "train_bench").is_dir():
    lat = pd.read_parquet(vit / "latency")
    tb = pd.read_parquet(vit / "train_bench")
    print("ViT-B/16 inference (latency table):")
    print(lat[["precision", "batch_size", "status", "latency_ms_p50", "per_sample_ms_p50",
               "throughput_samples_per_s", "gpu_peak_allocated_mb", "cpu_peak_rss_mb", "timer"]]
          .to_string(index=False))
    print("ViT-B/16 training (train_bench table):")
    print(tb[["precision", "batch_size", "status", "step_ms_p50", "forward_ms_p50",
              "backward_ms_p50", "optimizer_ms_p50", "samples_per_s", "gpu_peak_allocated_mb",
              "cpu_peak_rss_mb", "timer"]].to_string(index=False))
    for name, frame, col in (("inference", lat, "throughput_samples_per_s"),
                             ("training", tb, "samples_per_s")):
        ok = frame[frame["status"] == "ok"].pivot_table(index="batch_size", columns="precision",
                                                        values=col)
        if {"fp32", "bf16"} <= set(ok.columns):
            ratio = (ok["bf16"] / ok["fp32"]).round(2).to_dict()
            print(f"bf16 / fp32 {name} throughput by batch: {ratio}")

lora = out / "lora_bench"
trials = pd.read_parquet(lora / "trials")
lat = pd.read_parquet(lora / "latency")
tb = pd.read_parquet(lora / "train_bench")
batch = int(lat["batch_size"].max())
rows = []
for _, t in trials.sort_values("lora.rank").iterrows():
    rank = int(t["lora.rank"])
    li = lat[(lat.trial_id == t.trial_id) & (lat.batch_size == batch) & (lat.status == "ok")]
    tr = tb[(tb.trial_id == t.trial_id) & (tb.batch_size == batch) & (tb.status == "ok")]
    li = li.iloc[0] if len(li) else {}
    tr = tr.iloc[0] if len(tr) else {}
    label = "baseline" if rank == 0 else f"LoRA-{rank}"
    seed = SEED.get(label, {})
    rows.append({
        "model": label,
        "trainable %": round(float(t["params/trainable_pct"]), 2),
        "infer ms/sample": li.get("per_sample_ms_p50"),
        "FPS": 1000.0 / li["per_sample_ms_p50"] if len(li) else None,
        "infer MiB": mem(li) if len(li) else None,
        "train ms/batch": tr.get("step_ms_p50"),
        "train samples/s": tr.get("samples_per_s"),
        "train MiB": mem(tr) if len(tr) else None,
        **{f"seed {k}": v for k, v in seed.items()},
    })
table = pd.DataFrame(rows)
print(f"\nLoRA seed table at batch {batch}, {trials['precision'].iloc[0]}, "
      f"{trials['env/device_name'].iloc[0] if 'env/device_name' in trials else ''} "
      "(seed: RTX A6000, fp32, batch 32):")
print(table.round(2).to_string(index=False))
table.to_csv(out / "lora_seed_table.csv", index=False)
PY

echo
echo "gpu_check: $(( SECONDS - T0 )) s, $( ((STATUS == 0)) && echo 'all steps passed' || echo 'some steps FAILED')"
exit $STATUS
