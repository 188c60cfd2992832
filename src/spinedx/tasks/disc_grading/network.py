"""Per-disc grading network for sagittal lumbar MRI: one backbone, one head per grade.

Input: square disc crops (see :func:`disc_crops`) as ``(N, 1, S, S)`` or ``(N, 3, S, S)`` floats in
``[0, 1]`` and the disc level (``ivd_label``, 1 = L5/S1). ImageNet normalisation lives inside the
model, as in :class:`spinedx.tasks.xray_lesions.network.RoiClassifier`. The pooled backbone features go
through a shared hidden layer. Optionally, region intensity descriptors (``descriptors``: mean/std of the
normalised signal in a fixed grid around the disc centre: nucleus, endplates, vertebrae, canal) and the
level one-hot (``level_input``) are concatenated before it *and* to its output, so every head can read
them directly. The bundled grader uses neither: trained on both cohorts, the image alone graded
Pfirrmann better (see the model card's grader research).

Outputs (a dict of logits, see :data:`GRADE_TASKS`):

``binary``    ``(N, 6)``: one logit per :data:`BINARY_TASKS` task.
``pfirrmann`` ``(N, 4)``: CORAL cumulative logits ``logit P(grade > k)`` for k = 1..4, one shared
              score minus four ordered thresholds (rank-consistent); with
              ``pfirrmann_head="softmax"`` ``(N, 5)`` class logits for grades 1..5 instead.
``modic``     ``(N, 4)``: class logits for Modic 0..3.
``evidence_maps`` ``(N, C, S/16, S/16)``: activations of the backbone stage at stride
              :data:`EVIDENCE_REDUCTION`, which Grad-CAM weighs by their gradients
              (:meth:`spinedx.tasks.disc_grading.model.DiscGrader.evidence`).

Crops: :func:`disc_crops` cuts a square around each box (:func:`spinedx.data.crops.crop_box`)
enlarged by ``margin`` of the box's longer side on each side, at ``pad`` times the network size,
and normalises each crop by its own 1st/99th intensity percentiles. The network sees the centre
``size x size`` of it (:func:`view_crops`); training samples randomly rotated/scaled/shifted views
from the padded crop so augmentations never reach the zero-filled border.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spinedx.data.crops import crop_box
from spinedx.errors import InputError
from spinedx.io.levels import GRADE_COLUMNS
from spinedx.models.pretrained import load_pretrained


@dataclass(frozen=True)
class GradeTask:
    name: str
    kind: str
    """"binary", "ordinal" or "multiclass"."""
    classes: tuple[int, ...]
    """Grade values, in order (binary: (0, 1))."""


BINARY_TASKS: tuple[str, ...] = (
    "herniation",
    "bulging",
    "narrowing",
    "up_endplate",
    "low_endplate",
    "spondylolisthesis",
)
PFIRRMANN_GRADES: tuple[int, ...] = (1, 2, 3, 4, 5)
MODIC_GRADES: tuple[int, ...] = (0, 1, 2, 3)
GRADE_TASKS: dict[str, GradeTask] = {
    **{name: GradeTask(name, "binary", (0, 1)) for name in BINARY_TASKS},
    "pfirrmann": GradeTask("pfirrmann", "ordinal", PFIRRMANN_GRADES),
    "modic": GradeTask("modic", "multiclass", MODIC_GRADES),
}
"""Every head of the grader: name -> kind and grade values."""
OUTPUT_ORDER: tuple[str, ...] = GRADE_COLUMNS
"""Key order of :meth:`spinedx.tasks.disc_grading.model.DiscGrader.grade` results (SPIDER's)."""
N_LEVELS = 10
"""Level one-hot size: ivd_label 0..9 (labels above 9, thoracic discs rarely graded, share 9)."""
EVIDENCE_REDUCTION = 16
"""Grad-CAM reads the backbone stage at this stride: the last stage (32) is 3x3 on a 96-px crop, too
coarse to tell the disc from its posterior margin and the canal."""
PFIRRMANN_WIDTH: dict[str, int] = {"coral": len(PFIRRMANN_GRADES) - 1, "softmax": len(PFIRRMANN_GRADES)}
"""Pfirrmann head kind -> logits per disc: CORAL cumulative logits, or 5-class logits (cross-entropy)."""


def level_index(ivd_labels) -> np.ndarray:
    """``ivd_label`` -> one-hot index (clipped to ``0..N_LEVELS - 1``)."""
    return np.clip(np.asarray(ivd_labels, dtype=np.int64).reshape(-1), 0, N_LEVELS - 1)


# --------------------------------------------------------------------------- crops


def padded_margin(margin: float, pad: float) -> float:
    """The ``crop_box`` margin whose crop is ``pad`` times the side of the ``margin`` crop."""
    return (pad * (1.0 + 2.0 * margin) - 1.0) / 2.0


def padded_size(size: int, pad: float) -> int:
    """Side of the padded crop; its centre ``size`` pixels are the network view (same parity)."""
    extra = int(math.ceil(size * (pad - 1.0) / 2.0))
    return size + 2 * extra


def disc_crops(pixels: np.ndarray, boxes, size: int, margin: float, pad: float = 1.25) -> np.ndarray:
    """Padded, intensity-normalised disc crops ``(N, P, P)`` float32, ``P = padded_size(size, pad)``.

    ``pixels`` is a 2-D image (any range: it is min-max scaled to [0, 1] if it leaves it);
    ``boxes`` are (xmin, ymin, xmax, ymax) in its pixels.
    """
    image = np.asarray(pixels, dtype=np.float32)
    if image.ndim != 2:
        raise InputError(f"disc grading: expected a 2-D image, got shape {image.shape}")
    low, high = float(np.min(image)) if image.size else 0.0, float(np.max(image)) if image.size else 0.0
    if low < 0.0 or high > 1.0:
        image = (image - low) / max(high - low, 1e-6)
    big = padded_size(size, pad)
    wide = padded_margin(margin, big / size)
    crops = [crop_box(image, tuple(float(v) for v in box), big, wide) for box in boxes]
    if not crops:
        return np.zeros((0, big, big), dtype=np.float32)
    return normalize_crops(np.stack(crops))


def normalize_crops(crops: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """Scale each crop so its ``low_pct``/``high_pct`` percentiles map to 0/1 (clipped), float32."""
    crops = np.asarray(crops, dtype=np.float32)
    if crops.size == 0:
        return crops
    low = np.percentile(crops, low_pct, axis=(1, 2), keepdims=True)
    high = np.percentile(crops, high_pct, axis=(1, 2), keepdims=True)
    return np.clip((crops - low) / np.maximum(high - low, 1e-3), 0.0, 1.0).astype(np.float32)


def view_crops(
    crops: torch.Tensor,
    size: int,
    *,
    generator: torch.Generator | None = None,
    rotation_deg: float = 0.0,
    scale: float = 0.0,
    translate: float = 0.0,
) -> torch.Tensor:
    """The central ``size`` view of padded crops ``(N, P, P)`` -> ``(N, 1, size, size)``.

    With all augmentation amounts 0 this is an exact centre slice; otherwise each crop gets a
    random rotation (+- ``rotation_deg``), zoom (1 +- ``scale``) and shift (+- ``translate`` of the
    view) sampled bilinearly. No left-right flip: the canal must stay posterior (right).
    """
    if crops.ndim != 3:
        raise InputError(f"disc grading: expected (N, P, P) crops, got shape {tuple(crops.shape)}")
    n, big = crops.shape[0], crops.shape[-1]
    offset = (big - size) // 2
    if rotation_deg == 0.0 and scale == 0.0 and translate == 0.0:
        return crops[:, None, offset : offset + size, offset : offset + size].contiguous()
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(rotation_deg)
    zoom = 1.0 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * translate * (size / big)
    ratio = (size / big) / zoom
    cos, sin = torch.cos(angle) * ratio, torch.sin(angle) * ratio
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    return F.grid_sample(crops[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def jitter_intensity(
    images: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    gamma: float = 0.0,
    contrast: float = 0.0,
    brightness: float = 0.0,
    noise: float = 0.0,
) -> torch.Tensor:
    """Random gamma (exp(+-``gamma``)), contrast/brightness and Gaussian noise per image, clipped to [0, 1]."""
    n = images.shape[0]
    shape = (n, 1, 1, 1)
    out = images
    if gamma > 0:
        exponent = torch.exp((torch.rand(shape, generator=generator) * 2 - 1) * gamma)
        out = out.clamp(0, 1) ** exponent
    if contrast > 0 or brightness > 0:
        factor = 1.0 + (torch.rand(shape, generator=generator) * 2 - 1) * contrast
        bias = (torch.rand(shape, generator=generator) * 2 - 1) * brightness
        out = (out - 0.5) * factor + 0.5 + bias
    if noise > 0:
        out = out + torch.randn(out.shape, generator=generator) * noise
    return out.clamp(0, 1)


# --------------------------------------------------------------------------- network


REGION_ROWS: tuple[float, ...] = (-0.3, -0.15, 0.0, 0.15, 0.3)
"""Centres of the descriptor regions, cranio-caudal, in box widths from the disc centre (+ = caudal)."""
REGION_COLS: tuple[float, ...] = (-0.35, -0.15, 0.0, 0.15, 0.35, 0.6)
"""... and antero-posterior (+ = posterior; 0.6 reaches the canal behind the disc)."""
REGION_HALF: tuple[float, float] = (0.06, 0.09)
"""Half height and half width of each region, in box widths."""


def region_masks(size: int, margin: float) -> torch.Tensor:
    """``(R, size, size)`` averaging masks (each sums to 1) of the descriptor regions in a view.

    The view spans ``1 + 2 * margin`` box widths (``crop_box`` squares on the longer side, the
    width for every lumbar disc), centred on the disc.
    """
    per_width = size / (1.0 + 2.0 * margin)
    centre = size / 2.0
    masks = []
    for dy in REGION_ROWS:
        for dx in REGION_COLS:
            top = int(round(centre + (dy - REGION_HALF[0]) * per_width))
            bottom = max(int(round(centre + (dy + REGION_HALF[0]) * per_width)), top + 1)
            left = int(round(centre + (dx - REGION_HALF[1]) * per_width))
            right = max(int(round(centre + (dx + REGION_HALF[1]) * per_width)), left + 1)
            mask = torch.zeros(size, size)
            mask[max(top, 0) : min(bottom, size), max(left, 0) : min(right, size)] = 1.0
            if mask.sum() == 0:  # region outside a very tight view: fall back to the centre pixel
                mask[size // 2, size // 2] = 1.0
            masks.append(mask / mask.sum())
    return torch.stack(masks)


def region_descriptors(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation of the (grey) view in each region, plus of the whole view: ``(N, 2R + 2)``."""
    grey = images[:, 0]
    mean = torch.einsum("nhw,rhw->nr", grey, masks)
    square = torch.einsum("nhw,rhw->nr", grey * grey, masks)
    std = (square - mean * mean).clamp_min(0.0).add(1e-6).sqrt()
    whole = grey.flatten(1)
    return torch.cat([mean, std, whole.mean(1, keepdim=True), whole.std(1, keepdim=True)], 1)


class DiscGraderNet(nn.Module):
    """Multi-task disc grader: timm backbone -> pooled features (+ region descriptors, level) -> heads.

    With ``descriptors`` the mean/std intensity of a fixed grid of regions around the disc centre
    (:data:`REGION_ROWS` x :data:`REGION_COLS`, in box widths; ``margin`` says how many box widths
    the view spans) is standardised (BatchNorm without affine) and fed both into the shared layer
    and straight to the heads, beside the level one-hot (``level_input``): nucleus signal against the
    canal and the vertebrae is what Pfirrmann grading reads, and a linear read-out of it is hard to lose.
    ``pfirrmann_head`` is "coral" (ordinal cumulative logits) or "softmax" (5 class logits).
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        *,
        pretrained: str = "none",
        hidden: int = 256,
        dropout: float = 0.2,
        n_levels: int = N_LEVELS,
        descriptors: bool = True,
        margin: float = 0.35,
        level_input: bool = True,
        pfirrmann_head: str = "coral",
    ):
        super().__init__()
        import timm  # here, not at import: analysis runs the traced program without timm

        if backbone not in timm.list_models():
            raise InputError(f"model.backbone: unknown timm model '{backbone}'")
        if pfirrmann_head not in PFIRRMANN_WIDTH:
            raise InputError(
                f"model.pfirrmann_head: expected one of {list(PFIRRMANN_WIDTH)}, got '{pfirrmann_head}'"
            )
        self.backbone_name = backbone
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="")
        self.weights_source = load_pretrained(self.backbone, backbone, pretrained)
        config = self.backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(config.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))
        self.n_levels = n_levels
        self.level_input = bool(level_input)
        n_level_inputs = n_levels if level_input else 0
        self.pfirrmann_head = pfirrmann_head
        self.use_descriptors = descriptors
        self.margin = float(margin)
        self._masks: dict[int, torch.Tensor] = {}
        n_descriptors = 2 * len(REGION_ROWS) * len(REGION_COLS) + 2 if descriptors else 0
        self.descriptor_norm = nn.BatchNorm1d(n_descriptors, affine=False) if descriptors else None
        with torch.no_grad():
            channels = self.backbone.forward_features(torch.zeros(1, 3, 64, 64)).shape[1]
        self.evidence_stage = max(
            index
            for index, stage in enumerate(self.backbone.feature_info)
            if stage["reduction"] <= EVIDENCE_REDUCTION
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.shared = nn.Sequential(
            nn.Linear(channels + n_descriptors + n_level_inputs, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        width = hidden + n_descriptors + n_level_inputs
        self.binary = nn.Linear(width, len(BINARY_TASKS))
        if pfirrmann_head == "softmax":
            self.pfirrmann_logits = nn.Linear(width, len(PFIRRMANN_GRADES))
        else:
            self.pfirrmann_score = nn.Linear(width, 1)
            # Ordered thresholds: first one free, then positive gaps (softplus), so P(>k) decreases in k.
            self.pfirrmann_first = nn.Parameter(torch.tensor(-1.5))
            self.pfirrmann_gaps = nn.Parameter(torch.full((len(PFIRRMANN_GRADES) - 2,), math.log(math.e - 1)))
        self.modic = nn.Linear(width, len(MODIC_GRADES))

    def descriptors(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised region descriptors of ``(N, C, S, S)`` views (``(N, 0)`` when disabled)."""
        if not self.use_descriptors:
            return images.new_zeros((images.shape[0], 0))
        size = int(images.shape[-1])  # a plain int also when traced for ONNX export
        if size not in self._masks:
            self._masks[size] = region_masks(size, self.margin)
        raw = region_descriptors(images, self._masks[size].to(images.dtype))
        return self.descriptor_norm(raw)

    def thresholds(self) -> torch.Tensor:
        gaps = F.softplus(self.pfirrmann_gaps)
        return torch.cat([self.pfirrmann_first.view(1), self.pfirrmann_first + torch.cumsum(gaps, 0)])

    def feature_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's last feature maps and those of its evidence stage (one pass)."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        final, (evidence,) = self.backbone.forward_intermediates(
            (images - self.mean) / self.std, indices=[self.evidence_stage]
        )
        return final, evidence

    def forward(self, images: torch.Tensor, levels: torch.Tensor) -> dict[str, torch.Tensor]:
        described = self.descriptors(images)
        if self.level_input:
            onehot = F.one_hot(levels.long().clamp(0, self.n_levels - 1), self.n_levels).to(images.dtype)
            side = torch.cat([described, onehot], 1)
        else:
            side = described
        final_maps, evidence_maps = self.feature_maps(images)
        pooled = self.dropout(self.pool(final_maps).flatten(1))
        hidden = torch.cat([self.shared(torch.cat([pooled, side], 1)), side], 1)
        if self.pfirrmann_head == "softmax":
            pfirrmann = self.pfirrmann_logits(hidden)
        else:
            pfirrmann = self.pfirrmann_score(hidden) - self.thresholds().view(1, -1)
        return {
            "binary": self.binary(hidden),
            "pfirrmann": pfirrmann,
            "modic": self.modic(hidden),
            "evidence_maps": evidence_maps,
        }

    def set_frozen_blocks(self, n_blocks: int) -> None:
        """Freeze the stem and the first ``n_blocks`` backbone stages (0 = train everything).

        Frozen parts keep their BatchNorm statistics (eval mode) and get no gradients.
        """
        self.frozen_blocks = max(int(n_blocks), 0)
        for parameter in self.backbone.parameters():
            parameter.requires_grad = True
        for module in self._frozen_modules():
            for parameter in module.parameters():
                parameter.requires_grad = False
        self.train(self.training)

    def _frozen_modules(self) -> list[nn.Module]:
        count = getattr(self, "frozen_blocks", 0)
        if count <= 0:
            return []
        stem = [getattr(self.backbone, name) for name in ("conv_stem", "bn1") if hasattr(self.backbone, name)]
        blocks = list(getattr(self.backbone, "blocks", []))[:count]
        return stem + blocks

    def train(self, mode: bool = True) -> DiscGraderNet:
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
        return self


# --------------------------------------------------------------------------- outputs


def pfirrmann_probabilities(logits: torch.Tensor, head: str = "coral") -> torch.Tensor:
    """Pfirrmann logits -> grade probabilities ``(N, 5)`` (rows sum to 1): CORAL cumulative logits
    ``(N, 4)``, or with ``head="softmax"`` class logits ``(N, 5)``."""
    if head == "softmax":
        return torch.softmax(logits, 1)
    return _coral_probabilities(logits)


def pfirrmann_score(logits: torch.Tensor, head: str = "coral") -> torch.Tensor:
    """One differentiable score per disc that rises with degeneration (what Grad-CAM explains):
    the CORAL head's shared score, or the softmax head's expected grade."""
    if head == "softmax":
        grades = torch.arange(len(PFIRRMANN_GRADES), dtype=logits.dtype) + PFIRRMANN_GRADES[0]
        return torch.softmax(logits, 1) @ grades
    return logits[:, 0]


def _coral_probabilities(cumulative_logits: torch.Tensor) -> torch.Tensor:
    above = torch.sigmoid(cumulative_logits)
    ones = torch.ones_like(above[:, :1])
    zeros = torch.zeros_like(above[:, :1])
    bounds = torch.cat([ones, above, zeros], 1)
    probs = (bounds[:, :-1] - bounds[:, 1:]).clamp_min(0.0)
    return probs / probs.sum(1, keepdim=True).clamp_min(1e-12)


def pfirrmann_grade(probabilities: np.ndarray, decode: str = "expected") -> np.ndarray:
    """Grades 1..5 from ``(N, 5)`` probabilities: rounded expected grade, or the most probable one."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if decode == "argmax":
        return probabilities.argmax(1) + PFIRRMANN_GRADES[0]
    if decode != "expected":
        raise InputError(f"pfirrmann decode: expected 'expected' or 'argmax', got '{decode}'")
    expected = probabilities @ np.asarray(PFIRRMANN_GRADES, dtype=np.float64)
    return np.clip(np.floor(expected + 0.5), PFIRRMANN_GRADES[0], PFIRRMANN_GRADES[-1]).astype(np.int64)
