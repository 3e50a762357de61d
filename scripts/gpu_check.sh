#!/usr/bin/env bash
# Every CUDA path of lvmbench, proved in one run on a lent GPU (the device tool's nvidia-h200:
# Python 3.12, torch 2.11 + CUDA 13, timm, accelerate, peft, pyarrow, pandas, pytest; no Ray, no
# MLflow, no plotly/optuna, no network), inside 8 minutes of device time, install included.
#
#   here:  bash scripts/gpu_wheels.sh          # the wheels the machine lacks, into .whl/
#          run(carry=[".whl"], timeout_s=540, command="bash scripts/gpu_check.sh")
#   CPU:   bash scripts/gpu_check.sh --cpu-dry-run      # every step, shrunk, in a clean venv
#
# Steps (each named in $OUT/summary.json with its status, seconds, limit and figures; the JSON and
# $OUT/summary.txt, the printed tables, are rewritten after EVERY step, so a cut run still brings
# back what it measured; $OUT/gpu_check.log is everything printed; $OUT/results.tgz the Parquet):
#   install       pip install --no-index --find-links .whl (with dependency resolution: a missing
#                 need fails here, by name; the machine's own packages are never shadowed)
#   imports       the trial path imports; Ray, MLflow, plotly, optuna are reported, not needed
#   pytest        pytest -m gpu tests/gpu: CUDA events, fp16 GradScaler, bf16 autocast, allocated vs
#                 reserved, OOM as data (auto_batch_size), on-device data, NCCL, torch.compile,
#                 fused-attention FLOPs (skipped without CUDA: the dry run proves they collect)
#   lora_bench, lora_train        lora_ranks.yaml bench (rank 0, 8) and lora (rank 8) stages; the
#                                 seed's RTX A6000 table beside ours
#   perf_fp32, perf_bf16_loaders, perf_on_device   perf_tuning.yaml's variants on ResNet-50, with
#                                 speed-up ratios against fp32
#   attention     vit_attention_ablation.yaml: plain, fused, vit_optimized
#   prune         prune_recover.yaml's prune stage on ViT-B/16 at 224: structured 30%, latency
#                 before (dense) and after
#   hybrid        vit_hybrids.yaml: R50+ViT-B/16 (vit_b_r50)
#   side_by_side_vit, side_by_side_resnet50   the bench trainable on ViT-B/16 and ResNet-50 (batch
#                 64, bf16, 224 px, contiguous) against a bare PyTorch loop on the same model,
#                 batch, precision and memory format, CUDA events; inference and training
#                 samples/s and their ratio (target >= 0.97: below it the step reads "below
#                 target"); MFU against the dense bf16 peak, as the matmul probe measures it and as
#                 the data sheet gives it
# Every study runs through `python -m orchestrator trial` (in-process, no Ray) on a file that
# scripts/gpu_steps.py writes from the study's sweep: real model, batch, resolution, precision and
# profilers; synthetic data, random weights, one epoch of 20 batches (tens of steps, not epochs).
#
# Time (GPU run): the step limits below add up to 465 s < 480 s (8 min); each step also stops at
# what is left of that budget. timeout_s=540 leaves 60 s beyond it for the final table and a
# step's 5 s kill grace.
#
# --cpu-dry-run: the same steps, shrunk (32 px, batches of 4, 2 batches, 3 timed steps), in a
# clean venv built from the GPU machine's package set: the names of KINDS.md's list that the trial
# path touches (GPU_SET below; ~/.cache/lvmbench-gpu-dry/<hash of the set>, built once, copied
# fresh for each run as hard links; LVM_GPU_DRY_FRESH=1 rebuilds it). The carried wheels are
# installed into the copy by the same command the GPU run uses. It holds no Ray, MLflow, plotly or optuna, and no
# pydantic, fvcore or torch-pruning except through .whl. What differs from the GPU machine:
#   - Python 3.11 here (3.12 there): .whl also carries pydantic-core's cp311 wheel, which pip
#     picks only here;
#   - torch 2.14.1+cu130 and torchvision 0.29.1 (the CUDA wheels this machine has on disk; the
#     one CPU wheel there, torch 2.13.0+cpu, has no matching torchvision), run on the CPU, vs
#     2.11.0+cu130 and 0.26.0 there; accelerate 1.15.0, huggingface-hub 1.33.0 and transformers
#     5.17.0 as there; the rest at this index's newest versions, not necessarily the machine's;
#   - no CUDA: pytest's GPU tests skip, the rest runs on the CPU with CPU timers;
#   - its limits are its own (DRY_LIMIT), larger: 2 shared cores.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=${LVM_GPU_DRY_RUN:-0}
[[ ${1:-} == --cpu-dry-run ]] && DRY=1
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/summary.json" "$OUT/summary.txt" "$OUT/results.tgz" # this run's, not an earlier one's
WORK=$(mktemp -d) # Parquet, sweep files, test log: at most 8 files come back from $OUT
exec > >(tee "$OUT/gpu_check.log") 2>&1
T0=$SECONDS

STEPS=(install imports pytest lora_bench lora_train perf_fp32 perf_bf16_loaders perf_on_device
  attention prune hybrid side_by_side_vit side_by_side_resnet50)
declare -A GPU_LIMIT=([install]=20 [imports]=10 [pytest]=105 [lora_bench]=45 [lora_train]=35
  [perf_fp32]=25 [perf_bf16_loaders]=25 [perf_on_device]=25 [attention]=45 [prune]=40 [hybrid]=25
  [side_by_side_vit]=35 [side_by_side_resnet50]=30)
declare -A DRY_LIMIT=([install]=60 [imports]=30 [pytest]=120 [lora_bench]=150 [lora_train]=90
  [perf_fp32]=60 [perf_bf16_loaders]=60 [perf_on_device]=60 [attention]=150 [prune]=150 [hybrid]=90
  [side_by_side_vit]=90 [side_by_side_resnet50]=90)
GPU_BUDGET=480 # 8 minutes of device time, install included
sum=0
for s in "${STEPS[@]}"; do sum=$((sum + GPU_LIMIT[$s])); done
if ((sum >= GPU_BUDGET)); then
  echo "gpu_check: the step limits add up to $sum s, not under the $GPU_BUDGET s budget" >&2
  exit 2
fi

# The GPU machine's package set that the trial path touches (KINDS.md, "Python packages already
# there"); pins where KINDS.md gives the machine's version and this index has it.
GPU_SET=("torch==2.14.1" "torchvision==0.29.1" timm "accelerate==1.15.0" peft
  "huggingface-hub==1.33.0" "transformers==5.17.0" "safetensors==0.8.0" pyarrow pandas numpy pyyaml
  scikit-learn scipy pytest pytest-timeout psutil rich jinja2 matplotlib tqdm pillow tabulate
  portalocker nvidia-ml-py packaging filelock typing-extensions)
CARRIED=(pydantic pydantic-core annotated-types typing-inspection fvcore iopath yacs termcolor
  torch-pruning)

if [[ $DRY == 1 ]]; then
  MODE=dry DEVICE=cpu BUDGET=0
  for s in "${STEPS[@]}"; do BUDGET=$((BUDGET + DRY_LIMIT[$s])); done
  BASE_PY=${LVM_DRY_BASE_PY:-python3.11}
  key=$(printf '%s\n' "${GPU_SET[@]}" "$("$BASE_PY" -V 2>&1)" | sha256sum | cut -c1-12)
  CACHE=${LVM_GPU_DRY_CACHE:-$HOME/.cache/lvmbench-gpu-dry}/$key
  if [[ ${LVM_GPU_DRY_FRESH:-0} == 1 || ! -f $CACHE/.complete ]]; then
    echo "gpu_check: building the GPU machine's package set in $CACHE (once per set)"
    rm -rf "$CACHE" && mkdir -p "$(dirname "$CACHE")" && "$BASE_PY" -m venv "$CACHE" \
      && "$CACHE/bin/python" -m pip install -q --progress-bar off "${GPU_SET[@]}" \
      || { echo "gpu_check: cannot build the dry-run venv" >&2; exit 2; }
    # A resolver can pull a carried name in through a newer dependency (typer -> pydantic): the
    # GPU machine has none of them, so neither may this set.
    "$CACHE/bin/python" -m pip uninstall -q -y "${CARRIED[@]}" 2>/dev/null
    touch "$CACHE/.complete"
  fi
  VENV=$WORK/venv
  # Hard links: instant, and the base stays as built (pip and Python replace files, never write
  # into them).
  cp -al "$CACHE" "$VENV" 2>/dev/null || cp -a "$CACHE" "$VENV" || exit 2
  PY=$VENV/bin/python # a moved venv: its python finds its own pyvenv.cfg; scripts are not used
  declare -n LIMIT=DRY_LIMIT
else
  MODE=gpu DEVICE=cuda BUDGET=$GPU_BUDGET
  PY=${LVM_PY:-python3}
  declare -n LIMIT=GPU_LIMIT
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export LVMBENCH_LOCK_DIR=$WORK/locks
export PYTHONPATH=$PWD # lvmbench travels as the working tree (installing it would pull Ray)
echo "gpu_check: $([[ $DRY == 1 ]] && echo 'CPU dry run' || echo 'GPU run'), python $("$PY" -c 'import sys; print(sys.version.split()[0])') ($PY), out $OUT, budget $BUDGET s"

summarize() { # name status seconds limit [results]
  "$PY" scripts/gpu_steps.py summarize "$1" --status "$2" --seconds "$3" --limit "$4" \
    --elapsed $((SECONDS - T0)) --budget "$BUDGET" --mode "$MODE" --out "$OUT" \
    ${5:+--results "$5"} || echo "gpu_check: the summary of $1 could not be written"
}

# run_step NAME RESULTS_DIR COMMAND...: the command under the step's limit (or what is left of
# the budget), then its summary.
run_step() {
  local name=$1 results=$2
  shift 2
  local limit=${LIMIT[$name]} left=$((BUDGET - (SECONDS - T0)))
  ((left < limit)) && limit=$left
  echo
  echo "== $name (limit ${limit} s, ${left} s of the budget left)"
  if ((limit < 5)); then
    summarize "$name" "not run: budget spent" 0 "$limit"
    return
  fi
  local t=$SECONDS rc status=ok
  if declare -F "$1" >/dev/null; then # a function of this script: in a child bash, to be timed out
    timeout --kill-after=5 "$limit" bash -c '"$@"' _ "$@"
  else
    timeout --kill-after=5 "$limit" "$@"
  fi
  rc=$?
  if ((rc == 124 || rc == 137)); then
    status="timeout"
  elif ((rc != 0)); then
    status="failed (exit $rc)"
  fi
  summarize "$name" "$status" $((SECONDS - t)) "$limit" "$results"
}

install_wheels() {
  # The same command on the GPU machine and in the dry-run venv: names, not files, so pip resolves
  # every need against what is installed and .whl, and upgrades only what is too old.
  ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/: run scripts/gpu_wheels.sh here and carry .whl"; return 1; }
  "$PY" -m pip install --no-index --find-links .whl --no-cache-dir --progress-bar off \
    pydantic fvcore torch-pruning || return 1
  "$PY" -m pip list 2>/dev/null | grep -iE "^(pydantic|pydantic.core|annotated.types|typing.inspection|typing.extensions|fvcore|iopath|yacs|termcolor|torch.pruning) "
}

check_imports() {
  "$PY" - <<'PY'
import importlib
import importlib.util

for name in ("torch", "torchvision", "timm", "accelerate", "peft", "pyarrow", "pandas", "sklearn",
             "pydantic", "fvcore", "torch_pruning", "pytest", "orchestrator.cli",
             "orchestrator.driver.single_trial", "orchestrator.sinks.parquet_rows",
             "trainables.registry", "trainables.bench", "trainables.lora", "trainables.prune_recover",
             "profilers.flops", "profilers.latency"):
    mod = importlib.import_module(name)
    print(f"  {name:34s} {getattr(mod, '__version__', '')}")
absent = [n for n in ("ray", "mlflow", "plotly", "optuna") if importlib.util.find_spec(n) is None]
print("  not installed (the trial path needs none):", ", ".join(absent) or "none")
import torch
print("  cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
}

export PY
export -f install_wheels check_imports
run_step install "" install_wheels
run_step imports "" check_imports

mkdir -p "$WORK/pytest"
# One JSON line per test as it ends (tests/gpu/conftest.py); 60 s at most a test.
export LVM_GPU_TEST_LOG=$WORK/pytest/tests.jsonl
run_step pytest "$WORK/pytest" "$PY" -m pytest -m gpu tests/gpu -v -p no:cacheprovider -rs -o timeout=60
unset LVM_GPU_TEST_LOG

for study in lora_bench lora_train perf_fp32 perf_bf16_loaders perf_on_device attention prune hybrid; do
  read -r file indices < <("$PY" scripts/gpu_steps.py sweep "$study" --mode "$MODE" --dest "$WORK/sweeps")
  # shellcheck disable=SC2086
  run_step "$study" "$WORK/$study" "$PY" -m orchestrator trial "$file" --index $indices \
    --output "$WORK/$study"
done

# side_by_side_<model>: the bench trainable (through the CLI), then a bare loop, on one model.
if [[ $DRY == 1 ]]; then SB=(4 32 fp32 10 3); else SB=(64 224 bf16 30 5); fi
read -r SB_BATCH SB_IMG SB_PREC SB_STEPS SB_WARM <<<"${SB[*]}"
for m in vit_base_patch16_224 resnet50; do
  name=side_by_side_${m%%_*}
  res=$WORK/$name
  mkdir -p "$res"
  cat >"$res.yaml" <<YAML
name: gpu_$name
trainable: bench
model: {name: $m, pretrained: false, img_size: $SB_IMG}
dataset: {name: synthetic, num_classes: 10}
precision: $SB_PREC
device: $DEVICE
bench: {batch_sizes: [$SB_BATCH], precisions: [$SB_PREC], warmup: $SB_WARM, steps: $SB_STEPS, max_point_s: 10}
profilers: {latency: {batch_sizes: [$SB_BATCH], warmup: $SB_WARM, repeats: $SB_STEPS, max_point_s: 10}, flops: {train_step: true}}
resources: {cpu: $(nproc)}
YAML
  cat >"$res.sh" <<SH
set -e
"$PY" -m orchestrator trial "$res.yaml" --output "$res"
"$PY" scripts/gpu_steps.py bare --model $m --img $SB_IMG --batch $SB_BATCH --precision $SB_PREC \\
  --device $DEVICE --steps $SB_STEPS --warmup $SB_WARM --threads $(nproc) >"$res/bare.json"
SH
  run_step "$name" "$res" bash "$res.sh"
done

# The Parquet tables, if they fit what comes back (16 MiB a file).
(cd "$WORK" && find . -path ./venv -prune -o -path ./sweeps -prune -o -type d \
  \( -name trials -o -name epochs -o -name latency -o -name train_bench -o -name flops \) -print0 \
  | tar -czf "$OUT/results.tgz" --null -T - 2>/dev/null)
(($(stat -c %s "$OUT/results.tgz" 2>/dev/null || echo 0) > 15 * 1048576)) && rm -f "$OUT/results.tgz"

echo
cat "$OUT/summary.txt" >/dev/null 2>&1 || true
"$PY" - "$OUT/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"gpu_check ({s['mode']}, {s['device']}, python {s['python']}, torch {s['torch']}): "
      f"{s['elapsed_s']} s of {s['budget_s']} s")
for step in s["steps"]:
    print(f"  {step['name']:18s} {step['status']:22s} {step['seconds']:4d} s / {step['limit_s']} s")
print("all steps passed" if s["passed"] else "some steps FAILED")
sys.exit(0 if s["passed"] else 1)
PY
STATUS=$?
[[ $DRY == 1 ]] && rm -rf "$WORK"
exit $STATUS
