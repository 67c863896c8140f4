import pytest
import torch

from mlc.modeling.backbones import MissingWeightsError, backbone_spec, create_backbone, list_backbones


def test_registry_lists_real_and_toy_backbones():
    names = list_backbones()
    for n in ("resnet101", "tresnet_l", "tresnet_l_21k", "swin_large_384", "vit_large_224", "toy_cnn"):
        assert n in names
    with pytest.raises(KeyError, match="did you mean 'resnet101'"):
        backbone_spec("resnet10l")


def test_toy_backbone_grid_is_at_least_8x8():
    bb = create_backbone("toy_cnn")
    tokens, (h, w) = bb(torch.randn(2, 3, 64, 64))
    assert (h, w) == (8, 8) and tokens.shape == (2, 64, bb.num_features)


@pytest.mark.parametrize("name,size,grid,dim,cls", [("resnet18", 96, 3, 512, False),
                                                      ("vit_large_224", 224, 14, 1024, True)])
def test_real_backbones_give_token_grids(name, size, grid, dim, cls):
    bb = create_backbone(name)
    with torch.no_grad():
        tokens, (h, w) = bb(torch.randn(1, 3, size, size))
    assert (h, w) == (grid, grid) and tokens.shape == (1, grid * grid + cls, dim) and bb.has_cls == cls


def test_missing_weights_error_says_what_and_where(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("MLC_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as e:
        create_backbone("resnet101", pretrained=True)
    msg = str(e.value)
    assert "resnet101-63fe2227.pth" in msg and "download.pytorch.org" in msg and str(tmp_path / "hub") in msg
    assert "python -m mlc.weights PARAMS_FILE" in msg
    # online, a download that cannot reach its server is the same clear error, not a urllib traceback
    monkeypatch.setenv("MLC_OFFLINE", "0")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("Name or service not known")))
    with pytest.raises(MissingWeightsError, match=r"could not download[\s\S]*Name or service not known"):
        create_backbone("resnet101", pretrained=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="swin_large_patch4_window12_384"):
        create_backbone("swin_large_384", pretrained=True)


def test_local_weight_file_is_loaded(tmp_path):
    import torchvision
    ref = torchvision.models.resnet18(weights=None)
    torch.nn.init.constant_(ref.conv1.weight, 0.125)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    bb = create_backbone("resnet18", weights=str(path))
    assert torch.all(bb.body.conv1.weight == 0.125)
    # frozen BatchNorm, as Query2Label uses: no trainable BN parameters
    assert not any("bn" in n for n, _ in bb.named_parameters())
