#!/usr/bin/env bash
# Download, here, the wheels a lent GPU machine lacks into .whl/ (git-ignored), for
# scripts/gpu_check.sh to install there without a network.
#
# That machine has Python 3.12 with torch, torchvision, timm, accelerate, peft, pyarrow and pandas
# (and what they pull in: numpy, pyyaml, safetensors, huggingface_hub, tqdm, pillow), but neither
# Ray nor MLflow (`python -m orchestrator trial` needs neither) nor a network. What the trial path
# imports beyond that: pydantic (the configs), fvcore (FLOPs), torch-pruning (prune trainables),
# scikit-learn (macro F1, the digits dataset); and pytest for `pytest -m gpu`. Versions are the ones installed in .venv, so the
# GPU run uses what the tests here ran with. fvcore and iopath publish no wheels: they are built
# here from their (pure-Python) sources. At most 64 MiB travel with a device run; this prints the
# total (about 47 MiB, three quarters of it scipy).
#
#   bash scripts/gpu_wheels.sh            # then: run(carry=[".whl"], command="bash scripts/gpu_check.sh")
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${LVM_PY:-.venv/bin/python}
DEST=.whl
mkdir -p "$DEST"

version() {  # the version installed here of a distribution
  "$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"
}
pinned() { for d in "$@"; do echo "$d==$(version "$d")"; done; }

BINARY=(pydantic pydantic-core annotated-types typing-inspection torch-pruning yacs portalocker
  tabulate termcolor scikit-learn scipy joblib threadpoolctl pytest pluggy iniconfig pygments)
SOURCE=(fvcore iopath)

# shellcheck disable=SC2046
"$PY" -m pip download --quiet --only-binary=:all: --no-deps --dest "$DEST" \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform any \
  $(pinned "${BINARY[@]}")
# Pure Python: a wheel built here installs on any Python 3.
# shellcheck disable=SC2046
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$DEST" $(pinned "${SOURCE[@]}")

ls -1 "$DEST"
total=$(du -cb "$DEST"/*.whl | tail -n 1 | cut -f 1)
echo "gpu wheels: $(ls "$DEST"/*.whl | wc -l) files, $((total / 1048576)) MiB in $DEST/ (limit 64 MiB with everything carried)"
if ((total > 60 * 1048576)); then
  echo "too large to carry" >&2
  exit 1
fi
