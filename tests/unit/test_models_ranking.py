"""`models PATTERN` lists the name asked for and names starting with it before other matches."""

from __future__ import annotations

from orchestrator.driver.models_command import list_models, match_rank


def test_exact_then_prefix_then_anywhere() -> None:
    assert match_rank("vit_tiny", "vit_tiny") == 0
    assert match_rank("vit_tiny", "vit_tiny_patch16_224") == 1
    assert match_rank("vit_tiny", "davit_tiny") == 2


def test_models_vit_tiny_lists_vit_tiny_before_davit_and_maxvit() -> None:
    rows = [r for r in list_models("vit_tiny", with_figures=False) if r["kind"] == "timm"]
    names = [r["name"] for r in rows]
    assert names[0].startswith("vit_tiny"), names[:5]
    first_other = next(i for i, n in enumerate(names) if not n.startswith("vit_tiny"))
    assert all(not n.startswith("vit_tiny") for n in names[first_other:]), names
