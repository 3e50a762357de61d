"""Checkpoints: safetensors round trip, torch files with weights_only, head re-creation, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from trainables.adapters.lora import apply_lora
from trainables.config import LoraConfig
from trainables.models.checkpoints import (
    CHECKPOINT_FILE,
    CheckpointError,
    load_weights,
    read_checkpoint,
    save_model,
)


def tiny_vit(classes: int = 10, seed: int = 0, depth: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=classes, img_size=32, depth=depth
    )


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_safetensors_round_trip_restores_every_tensor(tmp_path: Path) -> None:
    src, dst = tiny_vit(seed=0), tiny_vit(seed=1)
    assert not same_state(src, dst)
    path = save_model(src, tmp_path)
    assert path == tmp_path / CHECKPOINT_FILE
    report = load_weights(dst, tmp_path)  # a directory resolves to its model.safetensors
    assert same_state(src, dst)
    assert report.loaded == len(src.state_dict()) and not report.head_reset


@pytest.mark.parametrize("wrap", ["plain", "nested", "ddp"])
def test_torch_file_loads_with_weights_only(tmp_path: Path, wrap: str) -> None:
    src, dst = tiny_vit(seed=0), tiny_vit(seed=1)
    state = src.state_dict()
    obj = {
        "plain": state,
        "nested": {"epoch": 3, "state_dict": state},
        "ddp": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    torch.save(obj, tmp_path / "w.pth")
    load_weights(dst, tmp_path / "w.pth")
    assert same_state(src, dst)


class Payload:
    """Not a tensor: torch.load(weights_only=True) must refuse to unpickle it."""


def test_torch_file_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    torch.save({"payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt.*weights_only=True"):
        read_checkpoint(tmp_path / "evil.pt")


def test_errors_name_the_path_and_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nowhere\.safetensors does not exist.*safetensors"):
        read_checkpoint(tmp_path / "nowhere.safetensors")
    with pytest.raises(CheckpointError, match=r"holds no model\.safetensors"):
        read_checkpoint(tmp_path)
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"unknown suffix '\.onnx'.*\.pth"):
        read_checkpoint(tmp_path / "w.onnx")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*broken\.safetensors"):
        read_checkpoint(tmp_path / "broken.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds list, not a state dict"):
        read_checkpoint(tmp_path / "list.pt")


def test_new_number_of_classes_keeps_backbone_and_recreates_head(tmp_path: Path) -> None:
    src = tiny_vit(classes=100, seed=0)  # e.g. pretrained on CIFAR-100
    save_model(src, tmp_path)
    dst = tiny_vit(classes=10, seed=1)  # fine-tuned on CIFAR-10
    fresh_head = dst.head.weight.detach().clone()
    report = load_weights(dst, tmp_path)
    assert report.head_reset == ["head.bias", "head.weight"]
    for k, v in dst.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(v, src.state_dict()[k]), k
    assert torch.equal(dst.head.weight, fresh_head)
    assert dst.head.out_features == 10


def test_same_number_of_classes_keeps_the_trained_head(tmp_path: Path) -> None:
    src = tiny_vit(seed=0)
    save_model(src, tmp_path)
    dst = tiny_vit(seed=1)
    assert not load_weights(dst, tmp_path).head_reset
    assert torch.equal(dst.head.weight, src.head.weight)


def test_another_architecture_is_an_error_naming_the_keys(tmp_path: Path) -> None:
    save_model(tiny_vit(depth=1), tmp_path)
    with pytest.raises(CheckpointError, match=r"model keys missing from the checkpoint: blocks\.1"):
        load_weights(tiny_vit(depth=2), tmp_path)
    report = load_weights(tiny_vit(depth=2), tmp_path, strict=False)
    assert report.missing and report.missing[0].startswith("blocks.1.")


def test_tied_weights_save_and_load(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Linear(4, 4)
            self.fc = nn.Linear(4, 4)
            self.fc.weight = self.enc.weight

    src, dst = Tied(), Tied()
    save_model(src, tmp_path)
    load_weights(dst, tmp_path)
    assert torch.equal(dst.enc.weight, src.enc.weight)
    assert dst.fc.weight is dst.enc.weight  # loading keeps the tie


def test_lora_checkpoint_resumes_as_lora_and_merges_into_a_plain_model(tmp_path: Path) -> None:
    cfg = LoraConfig(rank=4, alpha=8, dropout=0.0, target_modules=["qkv", "proj"])
    trained = apply_lora(tiny_vit(seed=0), cfg)
    torch.manual_seed(2)
    for name, p in trained.named_parameters():
        if ".lora_" in name or ".head." in name:
            p.data.normal_(0, 0.05)
    save_model(trained, tmp_path)
    x = torch.randn(2, 3, 32, 32)
    trained.eval()
    with torch.no_grad():
        want = trained(x)

    resumed = apply_lora(tiny_vit(seed=1), cfg)
    assert not load_weights(resumed, tmp_path).merged_lora
    plain = tiny_vit(seed=1)
    report = load_weights(plain, tmp_path)
    assert report.merged_lora
    resumed.eval()
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(resumed(x), want)
        torch.testing.assert_close(plain(x), want, atol=1e-5, rtol=1e-4)

    # A later stage with another number of classes: merged backbone, fresh head.
    other = tiny_vit(classes=5, seed=1)
    report = load_weights(other, tmp_path)
    assert report.merged_lora and report.head_reset == ["head.bias", "head.weight"]
    qkv = plain.blocks[0].attn.qkv.weight
    assert torch.equal(other.blocks[0].attn.qkv.weight, qkv)


def test_metadata_records_lora_settings(tmp_path: Path) -> None:
    cfg = LoraConfig(rank=4, alpha=8, dropout=0.0, target_modules=["qkv"])
    save_model(apply_lora(tiny_vit(), cfg), tmp_path)
    _, meta = read_checkpoint(tmp_path)
    assert meta["format"] == "lvmbench" and '"r": 4' in meta["lora"]
    save_model(tiny_vit(), tmp_path / "plain")
    assert "lora" not in read_checkpoint(tmp_path / "plain")[1]


def test_other_img_size_resamples_position_embedding_through_timm(tmp_path: Path) -> None:
    save_model(tiny_vit(seed=0), tmp_path)  # 32 px: 2x2 patches + cls = 5 tokens
    torch.manual_seed(1)
    bigger = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=64, depth=1
    )
    report = load_weights(bigger, tmp_path)
    assert report.resampled == ["pos_embed"]
    assert bigger.pos_embed.shape == (1, 17, 192)
    torch.testing.assert_close(
        bigger.blocks[0].attn.qkv.weight, tiny_vit(seed=0).blocks[0].attn.qkv.weight
    )
