"""The names the installed timm and torchvision accept (models, optimizers), without importing them
on every run.

Checking a sweep file needs timm's model and optimizer registries, and importing timm (with torch
and torchvision) takes about 3 s: most of what `validate` and the sweep's driver would spend before
Ray starts. The lists are read once from the libraries and kept in a small JSON file per installed
version (`$LVMBENCH_CACHE`, else `$XDG_CACHE_HOME/lvmbench`, else `~/.cache/lvmbench`); the file's
name holds the package's version and location, so another install or an upgrade reads afresh. A
timm edited in place (a source checkout installed with `pip install -e`, same version) keeps its
old list until those files are deleted.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path


def cache_dir() -> Path:
    explicit = os.environ.get("LVMBENCH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lvmbench"


def _install_key(package: str) -> str:
    """The installed package's version and folder: what the registry's contents depend on."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{package} is not installed (pip install {package})")
    version = importlib.metadata.version(package)
    where = hashlib.sha1(spec.origin.encode()).hexdigest()[:10]
    return f"{version}-{where}"


def cached_names(package: str, kind: str, read: Callable[[], list[str]]) -> frozenset[str]:
    """`read()` (which imports `package`) once per installed version of `package`; afterwards
    the names come from the cache file."""
    path = cache_dir() / f"{package}-{_install_key(package)}-{kind}.json"
    try:
        return frozenset(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass  # not written yet (or a partial write): read the library itself
    names = sorted(read())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(names), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: every run reads the library, which is only slower
    return frozenset(names)


@cache
def timm_models() -> frozenset[str]:
    def read() -> list[str]:
        import timm

        return timm.list_models()

    return cached_names("timm", "models", read)


@cache
def timm_optimizers() -> frozenset[str]:
    def read() -> list[str]:
        from timm.optim import list_optimizers

        return list_optimizers()

    return cached_names("timm", "optimizers", read)


@cache
def torchvision_models() -> frozenset[str]:
    def read() -> list[str]:
        import torchvision

        return torchvision.models.list_models()

    return cached_names("torchvision", "models", read)
