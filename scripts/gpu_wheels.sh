#!/usr/bin/env bash
# Download, here, the wheels a lent GPU machine lacks into .whl/ (git-ignored), for
# scripts/gpu_check.sh to install there, with dependency resolution, without a network.
#
# What that machine holds is the device tool's KINDS.md ("Python packages already there", Python
# 3.12): torch, torchvision, timm, accelerate, peft, pyarrow, pandas, numpy, pyyaml, safetensors,
# huggingface-hub, scikit-learn, scipy, pytest, pytest-timeout, psutil, rich, jinja2, matplotlib,
# tqdm, pillow, tabulate, portalocker, nvidia-ml-py, typing-extensions... but no Ray, MLflow,
# plotly or optuna (`python -m orchestrator trial` needs none of them). What the trial path imports
# beyond that list, and so the only wheels carried:
#   pydantic, pydantic-core, annotated-types, typing-inspection   the configs
#   fvcore, iopath, yacs, termcolor                                FLOPs (fvcore's counter)
#   torch-pruning                                                  the prune trainables
#   typing-extensions                                              only if the machine's is older
#     than pydantic-core's floor (>=4.16): pip's only-if-needed upgrade takes it from .whl then,
#     and leaves the machine's own otherwise.
# Nothing the machine already has is carried, so nothing of its own is shadowed; lvmbench itself
# travels as the working tree (on PYTHONPATH: installing it would pull Ray and MLflow).
# Versions are the ones installed in .venv, so the GPU run uses what the tests here ran with.
# fvcore and iopath publish no wheels: they are built here from their (pure-Python) sources.
#
#   bash scripts/gpu_wheels.sh      # then: run(carry=[".whl"], timeout_s=540, command="bash scripts/gpu_check.sh")
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${LVM_PY:-.venv/bin/python}
# The versions to carry are read from the project's environment: without it, stop here, saying how.
if ! "$PY" -c "import pydantic, fvcore, torch_pruning" >/dev/null 2>&1; then
  echo "gpu_wheels.sh: $PY cannot import the project's dependencies (pydantic, fvcore," \
    "torch_pruning), whose installed versions are the ones carried. Install the project first" \
    "(make .venv/.installed, which make test also does) or point LVM_PY at a Python that has it." >&2
  exit 2
fi
DEST=.whl
rm -rf "$DEST"
mkdir -p "$DEST"

version() { # the version installed here of a distribution
  "$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"
}
pinned() { for d in "$@"; do echo "$d==$(version "$d")"; done; }

BINARY=(pydantic pydantic-core annotated-types typing-inspection typing-extensions torch-pruning
  yacs termcolor)
SOURCE=(fvcore iopath)

# shellcheck disable=SC2046
"$PY" -m pip download --quiet --only-binary=:all: --no-deps --dest "$DEST" \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform any \
  $(pinned "${BINARY[@]}")
# The CPU dry run (scripts/gpu_check.sh --cpu-dry-run) installs the same names with the same
# command on this machine's Python 3.11: pydantic-core's cp311 build of the same version beside
# the cp312 one (pip takes the one whose tags match; the GPU machine never installs it).
"$PY" -m pip download --quiet --only-binary=:all: --no-deps --dest "$DEST" \
  --python-version 3.11 --implementation cp --abi cp311 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 "$(pinned pydantic-core)"
# Pure Python: a wheel built here installs on any Python 3.
# shellcheck disable=SC2046
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$DEST" $(pinned "${SOURCE[@]}")

# One version of each name, and every carried wheel's own needs met by the carried set or the
# machine's list (a need nobody carries fails here, by name, not there).
"$PY" - "$DEST" <<'PY'
import re
import sys
import zipfile
from pathlib import Path

# KINDS.md, "Python packages already there" (nvidia-h200), the names a carried wheel may need.
MACHINE = {"numpy", "pyyaml", "tqdm", "pillow", "tabulate", "portalocker", "torch", "typing-extensions"}
wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
names: dict[str, str] = {}
for w in wheels:
    name = re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower()
    version = w.name.split("-")[1]
    if name in names and names[name].split("-")[1] != version:
        sys.exit(f"two versions of {name}: {names[name]} and {w.name}")
    names[name] = w.name
missing = []
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if not line.startswith("Requires-Dist:") or "extra ==" in line or "python_version < \"3.7\"" in line:
                continue
            need = re.sub(r"[-_.]+", "-", re.split(r"[ ;<>=!~\[(]", line.split(":", 1)[1].strip())[0]).lower()
            if need not in names and need not in MACHINE:
                missing.append(f"{w.name} needs {need}")
if missing:
    sys.exit("not carried and not on the GPU machine: " + "; ".join(missing))
print(f"carried set closed: {', '.join(sorted(names))}")
PY

ls -1 "$DEST"
total=$(du -cb "$DEST"/*.whl | tail -n 1 | cut -f 1)
echo "gpu wheels: $(ls "$DEST"/*.whl | wc -l) files, $((total / 1048576)) MiB in $DEST/ (limit 64 MiB with everything carried)"
if ((total > 60 * 1048576)); then
  echo "too large to carry" >&2
  exit 1
fi
