"""What code and packages produced a trial: the record that lets anyone run it again.

| key                   | meaning                                                                  |
|-----------------------|--------------------------------------------------------------------------|
| `env/git_sha`         | commit of the lvmbench checkout the trial ran from (null outside git)    |
| `env/git_dirty`       | the checkout had uncommitted changes or untracked files                  |
| `env/git_diff_sha256` | SHA-256 of `git diff HEAD` plus the untracked files' names and contents  |
| `env/packages_sha256` | SHA-256 of the installed distributions, `name==version` sorted, one a line |

`package_rows()` is that list itself (the `packages` table; a CSV artifact in MLflow). Reading
never fails a trial: a missing `git` gives nulls.
"""

from __future__ import annotations

import hashlib
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from profilers.metric_registry import B, S, declare, declare_table

# The checkout lvmbench runs from (profilers/ sits at its top).
ROOT = Path(__file__).resolve().parent.parent

declare(
    __name__,
    {
        "env/git_sha": (S, "", "commit of the lvmbench checkout the trial ran from"),
        "env/git_dirty": (B, "", "the checkout had uncommitted changes or untracked files"),
        "env/git_diff_sha256": (
            S,
            "",
            "SHA-256 of the uncommitted diff and untracked files (see env/git_dirty)",
        ),
        "env/packages_sha256": (
            S,
            "",
            "SHA-256 of the installed packages, name==version sorted (list: packages table)",
        ),
    },
)
declare_table(
    "packages",
    __name__,
    {
        "package": (S, "", "an installed distribution"),
        "version": (S, "", "its version"),
    },
)


def _git(*args: str) -> bytes | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_facts() -> dict[str, Any]:
    """`env/git_sha`, `env/git_dirty`, `env/git_diff_sha256` of the checkout (nulls outside git)."""
    sha = _git("rev-parse", "HEAD")
    if sha is None:
        return {"env/git_sha": None, "env/git_dirty": None, "env/git_diff_sha256": None}
    diff = _git("diff", "HEAD", "--binary") or b""
    untracked = (_git("ls-files", "--others", "--exclude-standard", "-z") or b"").split(b"\0")
    digest = hashlib.sha256(diff)
    for name in sorted(n for n in untracked if n):
        digest.update(b"\0" + name + b"\0")
        try:
            digest.update((ROOT / name.decode()).read_bytes())
        except OSError:
            continue
    dirty = bool(diff.strip()) or any(untracked)
    return {
        "env/git_sha": sha.decode().strip() or None,
        "env/git_dirty": dirty,
        "env/git_diff_sha256": digest.hexdigest() if dirty else None,
    }


@cache
def _packages() -> tuple[tuple[str, str], ...]:
    found = {
        (dist.metadata["Name"] or "").lower(): dist.version for dist in metadata.distributions()
    }
    return tuple(sorted((n, v) for n, v in found.items() if n))


def package_rows() -> list[dict[str, Any]]:
    """The installed distributions, one row each (name, version), sorted by name."""
    return [{"package": n, "version": v} for n, v in _packages()]


def packages_sha256() -> str:
    text = "".join(f"{n}=={v}\n" for n, v in _packages())
    return hashlib.sha256(text.encode()).hexdigest()


def provenance_facts() -> dict[str, Any]:
    """The trial-end provenance facts (git state now, the package set of this process)."""
    return {**git_facts(), "env/packages_sha256": packages_sha256()}
