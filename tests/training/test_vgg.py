"""VGG19 stand-in: torchvision key layout, strict loading with clear errors, early stop, frozen eval mode."""
from __future__ import annotations

import pytest
import torch

from otavatar.training.vgg import CONV_INDICES, LAYER_NAMES, VGG19, vgg19

TORCHVISION_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


@pytest.fixture(scope="module")
def net() -> VGG19:
    torch.manual_seed(0)
    return vgg19(None, seed=0)


def test_state_dict_keys_match_torchvision_layout(net):
    expected = [f"features.{i}.{p}" for i in TORCHVISION_CONVS for p in ("weight", "bias")]
    assert list(net.state_dict()) == expected
    assert CONV_INDICES == TORCHVISION_CONVS
    assert net.state_dict()["features.0.weight"].shape == (64, 3, 3, 3)
    assert net.state_dict()["features.34.weight"].shape == (512, 512, 3, 3)
    assert net.state_dict()["features.10.weight"].shape == (256, 128, 3, 3)


def test_layer_names_cover_all_relus():
    assert LAYER_NAMES[:3] == ("relu1_1", "relu1_2", "relu2_1")
    assert "relu3_4" in LAYER_NAMES and "relu5_4" in LAYER_NAMES and len(LAYER_NAMES) == 16


def test_frozen_eval_and_seeded(net):
    assert not net.training
    assert all(not p.requires_grad for p in net.parameters())
    again = vgg19(None, seed=0)
    other = vgg19(None, seed=1)
    w = net.features[0].weight
    assert torch.equal(w, again.features[0].weight)
    assert not torch.equal(w, other.features[0].weight)
    assert torch.count_nonzero(net.features[0].bias) == 0
    # Kaiming-normal fan_out: std = sqrt(2 / (64*9)) for the first conv.
    assert w.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.15)


def test_forward_shapes_and_early_stop(net):
    x = torch.randn(2, 3, 32, 32)
    out = net(x, ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"))
    assert [tuple(v.shape) for v in out.values()] == [
        (2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4), (2, 512, 2, 2)]
    calls = []
    hooks = [m.register_forward_hook(lambda *a, i=i: calls.append(i)) for i, m in enumerate(net.features)]
    try:
        net(x, ("relu2_1",))
    finally:
        for h in hooks:
            h.remove()
    assert calls == list(range(7))  # conv0 relu1 conv2 relu3 pool4 conv5 relu6, then stop


def test_forward_rejects_unknown_layers(net):
    with pytest.raises(ValueError, match="relu9_9"):
        net(torch.zeros(1, 3, 8, 8), ("relu9_9",))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        net(torch.zeros(1, 1, 8, 8), ("relu1_1",))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_with_classifier_ignored(tmp_path, net, suffix):
    state = {k: v.clone() for k, v in vgg19(None, seed=3).state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision's head: ignored
    path = tmp_path / f"vgg19{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file
        save_file(state, str(path))
    loaded = vgg19(path)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not loaded.training and all(not p.requires_grad for p in loaded.parameters())
    x = torch.randn(1, 3, 16, 16)
    assert not torch.equal(loaded(x, ("relu2_1",))["relu2_1"], net(x, ("relu2_1",))["relu2_1"])


def test_missing_key_raises_clear_error(tmp_path, net):
    state = dict(net.state_dict())
    del state["features.21.bias"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(KeyError, match=r"missing \['features.21.bias'\]"):
        vgg19(path)


def test_wrong_shape_raises_clear_error(tmp_path, net):
    state = dict(net.state_dict())
    state["features.5.weight"] = torch.zeros(128, 32, 3, 3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"features.5.weight has shape \(128, 32, 3, 3\), expected \(128, 64, 3, 3\)"):
        vgg19(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        vgg19(tmp_path / "nope.pth")
