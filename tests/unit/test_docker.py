"""docker/ works as written: the data volume is where the sweeps look, the image has what the
docs ask of it, the build context leaves local state out, and no recipe counts a GPU twice."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import pytest
import yaml

from orchestrator.driver.schema import load_sweep
from orchestrator.driver.stages import build_plan

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
NODES = ("head", "worker")


def _workdir() -> str:
    found = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert found, "the Dockerfile sets no WORKDIR"
    return found[-1]


def _mounts(service: str) -> list[str]:
    """Container-side paths mounted into a compose service (its own volumes, else the anchor's)."""
    spec = yaml.safe_load(COMPOSE.read_text())
    node = {**spec.get("x-node", {}), **spec["services"][service]}
    return [v.split(":")[1] for v in node.get("volumes", [])]


def _dataset_roots(cwd: Path) -> set[str]:
    """Each stage's dataset.root as written: relative to `cwd` (where the driver runs) or absolute."""
    roots = set()
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        for stage in build_plan(load_sweep(path), source=str(path)):
            root = Path(stage.sweep.dataset.root)  # the schema made it absolute against cwd
            roots.add(str(root.relative_to(cwd)) if root.is_relative_to(cwd) else str(root))
    return roots


def test_every_sweeps_dataset_root_is_inside_a_volume_on_every_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    workdir = _workdir()
    roots = _dataset_roots(tmp_path.resolve())
    assert roots, "no dataset.root found in sweeps/"
    for service in NODES:
        mounts = _mounts(service)
        for root in roots:
            # The driver (on the head) resolves a relative root against its working folder, the
            # image's WORKDIR, and hands the absolute path to every worker.
            where = posixpath.normpath(posixpath.join(workdir, root))
            inside = [m for m in mounts if where == m or where.startswith(m.rstrip("/") + "/")]
            assert inside, f"{service}: dataset.root {root!r} -> {where}, not under {mounts}"


def test_the_image_has_what_the_docs_ask_of_it() -> None:
    dockerfile = DOCKERFILE.read_text()
    if "basic-auth" in (ROOT / "docs" / "cluster.md").read_text():
        assert "mlflow[auth]" in dockerfile, "basic auth is documented: install mlflow[auth]"
    volumes = re.findall(r"^VOLUME\s+\[(.*)\]", dockerfile, flags=re.M)
    declared = {v.strip().strip('"') for line in volumes for v in line.split(",")}
    for service in NODES:
        assert declared <= set(_mounts(service)), (service, declared)


@pytest.mark.parametrize("entry", [".venv", "results", "mlruns", ".git", "data", "__pycache__"])
def test_the_build_context_leaves_local_state_out(entry: str) -> None:
    ignore = ROOT / ".dockerignore"
    assert ignore.is_file(), "no .dockerignore: the build context would carry .venv/, results/ ..."
    lines = [ln.strip() for ln in ignore.read_text().splitlines() if not ln.startswith("#")]
    assert any(ln.rstrip("/").split("/")[-1] == entry for ln in lines), entry


def test_no_recipe_scales_a_worker_that_takes_every_gpu() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    devices = spec["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    takes_all = any(d.get("count") == "all" for d in devices)
    texts = [COMPOSE.read_text(), (ROOT / "docs" / "cluster.md").read_text()]
    # A command line that scales the worker (not the warning against it).
    scaled = [
        ln
        for t in texts
        for ln in t.splitlines()
        if re.search(r"docker compose .*--scale worker=", ln) and "`" not in ln
    ]
    assert not (takes_all and scaled), scaled
