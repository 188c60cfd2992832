"""Every supported backbone builds with the thesis head; pretrained weights load offline or fail clearly."""

import pytest
import timm
import torch

from spinedx.errors import InputError
from spinedx.tasks.xray_lesions.network import SUPPORTED_BACKBONES, RoiClassifier


@pytest.mark.parametrize("backbone", SUPPORTED_BACKBONES)
def test_backbone_builds_and_classifies(backbone):
    model = RoiClassifier(backbone, 3, hidden=64, pretrained="none").eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 64, 64))
        probabilities = model.probabilities(logits)
    assert logits.shape == (2, 3)
    assert torch.allclose(probabilities.sum(1), torch.ones(2))
    assert model.head[2].out_features == 64  # GAP -> Flatten -> Dense(64)


def test_sigmoid_output_is_binary_only():
    model = RoiClassifier("resnet18", 2, output="sigmoid").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1)
    with pytest.raises(InputError, match="exactly 2 classes"):
        RoiClassifier("resnet18", 3, output="sigmoid")


def test_packaged_imagenet_weights_are_real():
    model = RoiClassifier("tf_efficientnet_lite0", 2, pretrained="imagenet")
    assert model.weights_source.startswith("ImageNet")
    random_init = timm.create_model("tf_efficientnet_lite0", num_classes=0, global_pool="")
    stem = model.backbone.conv_stem.weight
    assert not torch.allclose(stem, random_init.conv_stem.weight)
    # Trained BatchNorm statistics, unlike the initial zeros/ones.
    assert model.backbone.bn1.running_var.std() > 0


def test_pretrained_from_file(tmp_path):
    source = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = RoiClassifier("resnet18", 2, pretrained=str(path))
    assert model.weights_source == f"file {path}"
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)


def test_pretrained_file_of_another_architecture(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(timm.create_model("vgg16", num_classes=0).state_dict(), path)
    with pytest.raises(InputError, match="backbone tensors missing"):
        RoiClassifier("resnet18", 2, pretrained=str(path))


def test_unknown_backbone_and_missing_file():
    with pytest.raises(InputError, match="unknown timm model"):
        RoiClassifier("resnet9000", 2)
    with pytest.raises(InputError, match="neither 'imagenet', 'none' nor an existing file"):
        RoiClassifier("resnet18", 2, pretrained="/nonexistent/weights.pth")
