"""ArcFace ResNet-18 (resnet_face18 layout): key names, shapes, strict loading with clear errors, frozen eval."""
from __future__ import annotations

import pytest
import torch

from otavatar.training.arcface import ArcFaceResNet18, arcface_resnet18


@pytest.fixture(scope="module")
def net() -> ArcFaceResNet18:
    torch.manual_seed(0)
    return arcface_resnet18(None)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, net):
    """One perturbed state dict saved as DataParallel-prefixed .pth (the common user file)."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["fc5.bias"] += 0.5
    state["bn5.running_mean"] += 0.25
    path = tmp_path_factory.mktemp("arcface") / "resnet18_110.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    return path, state


def test_key_names_follow_resnet_face18(net):
    keys = list(net.state_dict())
    head = ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
            "bn1.num_batches_tracked", "prelu.weight", "layer1.0.bn0.weight"]
    assert keys[:8] == head
    block = [k.removeprefix("layer2.0.") for k in keys if k.startswith("layer2.0.")]
    assert [k.split(".")[0] for k in block if k.endswith("weight")] == [
        "bn0", "conv1", "bn1", "prelu", "conv2", "bn2", "downsample", "downsample"]
    assert "layer1.0.downsample.0.weight" not in keys  # 64 -> 64, stride 1: identity shortcut
    assert all(f"layer{i}.1.conv2.weight" in keys for i in range(1, 5)) and "layer1.2.bn0.weight" not in keys
    assert not any(".se." in k for k in keys)  # no squeeze-excitation
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    assert keys[-12:] == [f"bn4.{k}" for k in bn] + ["fc5.weight", "fc5.bias"] + [f"bn5.{k}" for k in bn]
    shapes = net.state_dict()
    assert shapes["conv1.weight"].shape == (64, 1, 3, 3)
    assert shapes["prelu.weight"].shape == (1,)
    assert shapes["layer4.0.downsample.0.weight"].shape == (512, 256, 1, 1)
    assert shapes["layer3.0.conv1.weight"].shape == (128, 128, 3, 3)  # conv1 keeps the input width
    assert shapes["fc5.weight"].shape == (512, 512 * 8 * 8)
    assert shapes["bn5.running_var"].shape == (512,)


def test_forward_shape_frozen_eval(net):
    assert not net.training and all(not p.requires_grad for p in net.parameters())
    out = net(torch.rand(2, 1, 128, 128) * 2 - 1)
    assert out.shape == (2, 512) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\[B,1,128,128\]"):
        net(torch.zeros(1, 3, 128, 128))


def test_pth_round_trip_strips_module_prefix(saved):
    path, state = saved
    loaded = arcface_resnet18(path)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not loaded.training and all(not p.requires_grad for p in loaded.parameters())


def test_safetensors_round_trip_and_old_files_without_counters(tmp_path, saved):
    from safetensors.torch import save_file
    _, state = saved
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # PyTorch < 0.4.1 files
    path = tmp_path / "arcface.safetensors"
    save_file(old, str(path))
    loaded = arcface_resnet18(path)
    assert torch.equal(loaded.state_dict()["fc5.bias"], state["fc5.bias"])


def test_missing_unexpected_and_misshaped_keys_raise(tmp_path, net):
    state = dict(net.state_dict())
    del state["layer3.1.bn2.weight"]
    state["se.fc.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(KeyError, match=r"missing \['layer3.1.bn2.weight'\].*unexpected \['se.fc.weight'\]"):
        arcface_resnet18(path)
    state = dict(net.state_dict())
    state["fc5.weight"] = torch.zeros(512, 512 * 7 * 7)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"fc5.weight has shape \(512, 25088\), expected \(512, 32768\)"):
        arcface_resnet18(path)
