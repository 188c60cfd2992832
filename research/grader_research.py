"""Disc grader research on both MRI cohorts under a split fixed before any experiment.

    python research/grader_research.py --spider ../shared/data/spider-sagittal \
        --lumbar515 ../shared/data/lumbar515-sagittal --work runs/grader_research [--configs a,b]
    python research/grader_research.py ... --table      # the comparison table from finished configs

Protocol (fixed before the first training, written to ``WORK/split.json`` and checked on every rerun):

* Samples are the discs the bundled localiser finds on every series of both cohorts, as analysis
  finds them. SPIDER discs take the grades of (patient, *predicted* level) from gradings.csv, so a
  mislevelled disc carries the wrong disc's grades, as end to end. lumbar515 discs take the grades of
  the reference disc box whose centre they contain (unlabelled otherwise); a grade a cohort does not
  have is masked out of the loss and the metrics, never read as 0.
* Per cohort, 20% of the patients form the **report** split, which only reports. The rest are split
  again: 80% **fit** (training) and 20% **select** (inner validation). Every design choice — which
  configuration wins per finding, the ensemble's members — is made on *select* only.
* Every configuration trains for the same fixed number of epochs on *fit* (no early stopping on any
  split) and saves its logits on *select* and *report*.
* Cross-cohort: a configuration trained on the fit patients of one cohort scores every patient of
  the other cohort (none of them was used for anything).
* The level-only prior is each finding's prevalence (Pfirrmann: the mean grade) per disc level
  among the fit discs of the same cohort.
* 95% CIs: percentile bootstrap over patients (1,000 resamples).

The crops, the augmentation and the losses follow the bundled grader (``spinedx.tasks.disc_grading``);
the configurations differ only in what the comparison names. The two cohorts have no neighbouring
slices (one mid-sagittal slice per series), so 2.5-D input cannot be tried on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn
from tqdm import tqdm

from spinedx.evaluation.bootstrap import bootstrap_many
from spinedx.evaluation.grading import quadratic_kappa, sensitivity_at_specificity
from spinedx.io.atomic import atomic_path, atomic_write_text
from spinedx.io.lumbar515 import centres_inside, read_lumbar515
from spinedx.io.spider import read_spider
from spinedx.io.volumes import read_sagittal
from spinedx.models.pretrained import load_pretrained
from spinedx.models.registry import resolve_weights
from spinedx.tasks.canal_stenosis.network import posterior_crops
from spinedx.tasks.disc_grading.network import (
    BINARY_TASKS as GRADER_BINARY,
)
from spinedx.tasks.disc_grading.network import (
    DiscGraderNet,
    disc_crops,
    jitter_intensity,
    level_index,
    view_crops,
)
from spinedx.tasks.disc_localization.model import DiscLocalizer

logger = logging.getLogger("grader_research")

FINDINGS = ("herniation", "bulging", "narrowing", "stenosis", "spondylolisthesis")
"""Binary findings studied; each cohort labels only some of them (the rest are NaN)."""
COHORTS = ("spider", "lumbar515")
COHORT_FINDINGS = {
    "spider": ("herniation", "bulging", "narrowing", "spondylolisthesis", "pfirrmann"),
    "lumbar515": ("bulging", "stenosis", "spondylolisthesis", "pfirrmann"),
}
"""What each cohort labels."""
SPLIT_SEED = 20261203
VIEW = 128
"""Side of the cached disc view; other resolutions are resized from it."""
PAD = 1.25
MARGIN = 0.35
POSTERIOR_SIZE = 64
POSTERIOR_SCALE = 1.3
SPECIFICITY = 0.88
RESAMPLES = 1000


# --------------------------------------------------------------------------- samples


def _detections(localizer: DiscLocalizer, path: Path) -> list:
    return localizer.detect(read_sagittal(path).pixels)[0]


def spider_samples(root: Path, localizer: DiscLocalizer) -> pd.DataFrame:
    dataset = read_spider(root)
    gradings = dataset.gradings.astype({"patient": str}).set_index(["patient", "ivd_label"])
    rows = []
    for series in tqdm(dataset.series.itertuples(), total=len(dataset.series), desc="spider: localise"):
        patient = str(series.patient)
        for detection in _detections(localizer, dataset.image_path(series.image_id)):
            key = (patient, int(detection.ivd_label))
            if key not in gradings.index:
                continue
            grade = gradings.loc[key]
            rows.append(
                {"cohort": "spider", "image_id": str(series.image_id), "patient": patient}
                | {"ivd_label": int(detection.ivd_label), "box": list(map(float, detection.box))}
                | {name: float(grade[name]) for name in ("herniation", "bulging", "narrowing")}
                | {"spondylolisthesis": float(grade["spondylolisthesis"]), "stenosis": math.nan}
                | {"pfirrmann": float(grade["pfirrmann"])}
            )
    return pd.DataFrame(rows)


def lumbar515_samples(root: Path, localizer: DiscLocalizer) -> pd.DataFrame:
    dataset = read_lumbar515(root)
    discs = dataset.discs
    rows = []
    for series in tqdm(dataset.series.itertuples(), total=len(dataset.series), desc="lumbar515: localise"):
        reference = discs[discs["image_id"] == series.image_id]
        for detection in _detections(localizer, dataset.image_path(series.image_id)):
            inside = centres_inside(reference, detection.box)
            if inside.sum() != 1:  # no reference disc, or two in one box: no clean label
                continue
            disc = reference.iloc[int(np.flatnonzero(inside)[0])]

            def grade(name: str, disc=disc) -> float:
                return math.nan if pd.isna(disc[name]) else float(disc[name])

            rows.append(
                {"cohort": "lumbar515", "image_id": str(series.image_id), "patient": str(series.patient)}
                | {"ivd_label": int(detection.ivd_label), "box": list(map(float, detection.box))}
                | {"herniation": math.nan, "narrowing": math.nan}
                | {name: grade(name) for name in ("bulging", "stenosis", "spondylolisthesis", "pfirrmann")}
            )
    return pd.DataFrame(rows)


def load_samples(work: Path, spider: Path, lumbar515: Path) -> pd.DataFrame:
    cache = work / "samples.json"
    if cache.is_file():
        return pd.read_json(cache, orient="records", dtype={"patient": str, "image_id": str})
    localizer = DiscLocalizer.load(resolve_weights("disc_localizer").path)
    table = pd.concat(
        [spider_samples(spider, localizer), lumbar515_samples(lumbar515, localizer)], ignore_index=True
    )
    atomic_write_text(cache, table.to_json(orient="records"))
    return table


def fixed_split(table: pd.DataFrame, work: Path) -> np.ndarray:
    """'fit' / 'select' / 'report' per row, by patient, drawn once and checked on every rerun."""
    path = work / "split.json"
    if path.is_file():
        assigned = json.loads(path.read_text())
    else:
        rng = np.random.default_rng(SPLIT_SEED)
        assigned = {}
        for cohort in COHORTS:
            patients = sorted(table.loc[table["cohort"] == cohort, "patient"].unique())
            order = rng.permutation(len(patients))
            n_report = round(0.2 * len(patients))
            n_select = round(0.2 * (len(patients) - n_report))
            for rank, index in enumerate(order):
                part = "report" if rank < n_report else "select" if rank < n_report + n_select else "fit"
                assigned[f"{cohort}/{patients[index]}"] = part
        atomic_write_text(path, json.dumps(assigned, indent=0, sort_keys=True))
    keys = table["cohort"] + "/" + table["patient"]
    missing = sorted(set(keys) - set(assigned))
    if missing:
        raise SystemExit(
            f"{path}: patients {missing[:3]} are not in the fixed split; start a new work folder"
        )
    return keys.map(assigned).to_numpy()


# --------------------------------------------------------------------------- crops


def load_crops(work: Path, table: pd.DataFrame, roots: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Padded disc crops ``(N, P, P)`` (view ``VIEW``) and posterior-margin crops ``(N, 64, 64)``, float16."""
    disc_path, posterior_path = work / "disc_crops.npy", work / "posterior_crops.npy"
    if disc_path.is_file() and posterior_path.is_file():
        return np.load(disc_path), np.load(posterior_path)
    readers = {"spider": read_spider(roots["spider"]), "lumbar515": read_lumbar515(roots["lumbar515"])}
    disc_parts, posterior_parts, order = [], [], []
    for (cohort, image_id), rows in tqdm(table.groupby(["cohort", "image_id"]), desc="crops"):
        pixels = read_sagittal(readers[cohort].image_path(image_id)).pixels
        boxes = rows["box"].tolist()
        disc_parts.append(disc_crops(pixels, boxes, VIEW, MARGIN, PAD).astype(np.float16))
        posterior_parts.append(
            posterior_crops(pixels, boxes, POSTERIOR_SIZE, POSTERIOR_SCALE).astype(np.float16)
        )
        order.append(rows.index.to_numpy())
    index = np.concatenate(order)
    discs = np.empty((len(table),) + disc_parts[0].shape[1:], dtype=np.float16)
    posteriors = np.empty((len(table), POSTERIOR_SIZE, POSTERIOR_SIZE), dtype=np.float16)
    discs[index], posteriors[index] = np.concatenate(disc_parts), np.concatenate(posterior_parts)
    for path, array in ((disc_path, discs), (posterior_path, posteriors)):
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.save(handle, array)
    return discs, posteriors


def resized(crops: np.ndarray, view: int) -> torch.Tensor:
    """Padded crops at another view size (the padded side scales with it)."""
    tensor = torch.from_numpy(crops.astype(np.float32))
    if view == VIEW:
        return tensor
    side = round(crops.shape[-1] * view / VIEW)
    side += (side - view) % 2  # same parity as the view, so the centre view is exact
    return F.interpolate(tensor[:, None], size=(side, side), mode="bilinear", antialias=True)[:, 0]


# --------------------------------------------------------------------------- networks


class ResearchNet(nn.Module):
    """A backbone on the crop -> one logit per binary finding + a Pfirrmann head, optionally with the
    disc level as an explicit logit offset (a learned bias per level and output)."""

    def __init__(
        self, backbone: str, *, imagenet: bool, level_offset: bool, pfirrmann: str, freeze_blocks: int
    ):
        super().__init__()
        self.frozen: list[nn.Module] = []
        if backbone == "resnet18":
            import torchvision

            self.backbone = torchvision.models.resnet18(weights=None)
            features = self.backbone.fc.in_features
            self.backbone.fc = nn.Identity()
        else:
            import timm

            self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0)
            if imagenet:
                load_pretrained(self.backbone, backbone, "imagenet")
            features = self.backbone.num_features
            if freeze_blocks:  # as the bundled grader: ImageNet's early stages stay as they are
                stem = [self.backbone.conv_stem, self.backbone.bn1]
                self.frozen = stem + list(self.backbone.blocks)[:freeze_blocks]
                for module in self.frozen:
                    module.requires_grad_(False)
        self.register_buffer("mean", torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1))
        self.pfirrmann_kind = pfirrmann
        n_pfirrmann = 1 if pfirrmann == "coral" else 5
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(features, len(FINDINGS) + n_pfirrmann)
        self.level = nn.Linear(10, len(FINDINGS) + n_pfirrmann, bias=False) if level_offset else None
        if level_offset:
            nn.init.zeros_(self.level.weight)
        if pfirrmann == "coral":
            self.thresholds = nn.Parameter(torch.tensor([-1.5, -0.5, 0.5, 1.5]))

    def train(self, mode: bool = True) -> ResearchNet:
        super().train(mode)
        for module in self.frozen:  # frozen stages keep their BatchNorm statistics
            module.eval()
        return self

    def forward(self, images: torch.Tensor, levels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.head(self.dropout(self.backbone((images.expand(-1, 3, -1, -1) - self.mean) / self.std)))
        if self.level is not None:
            out = out + self.level(F.one_hot(levels.long(), 10).to(out.dtype))
        binary, pfirrmann = out[:, : len(FINDINGS)], out[:, len(FINDINGS) :]
        if self.pfirrmann_kind == "coral":
            # Sorted thresholds keep P(grade > k) decreasing in k.
            pfirrmann = pfirrmann - torch.sort(self.thresholds).values.view(1, -1)
        return {"binary": binary, "pfirrmann": pfirrmann}


class CurrentGrader(nn.Module):
    """The bundled grader's network (region descriptors, level one-hot, CORAL) in ResearchNet's outputs;
    it has no stenosis head, so its stenosis logit is a constant the loss ignores."""

    def __init__(self):
        super().__init__()
        self.net = DiscGraderNet("tf_efficientnet_lite0", pretrained="imagenet", margin=MARGIN)
        self.net.set_frozen_blocks(2)
        self.columns = [GRADER_BINARY.index(name) if name in GRADER_BINARY else -1 for name in FINDINGS]
        self.pfirrmann_kind = "coral"

    def forward(self, images: torch.Tensor, levels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(images, levels)
        zeros = out["binary"][:, :1] * 0.0
        binary = torch.cat([out["binary"][:, [c]] if c >= 0 else zeros for c in self.columns], 1)
        return {"binary": binary, "pfirrmann": out["pfirrmann"]}


@dataclass(frozen=True)
class Config:
    name: str
    description: str
    backbone: str = "tf_efficientnet_lite0"
    imagenet: bool = True
    view: int = 96
    crop: str = "disc"
    """'disc' (whole disc with context) or 'posterior' (posterior margin and canal, 64 px)."""
    level_offset: bool = True
    pfirrmann: str = "coral"
    findings: tuple[str, ...] = (*FINDINGS, "pfirrmann")
    """What the loss trains (the rest of the outputs are ignored)."""
    current: bool = False
    train_on: tuple[str, ...] = COHORTS
    freeze_blocks: int = 2
    """Stem + this many backbone stages stay frozen (ImageNet backbones)."""
    epochs: int = 6
    lr: float = 1e-3
    backbone_lr: float = 3e-4


PLAIN_CNN = {"backbone": "resnet18", "imagenet": False, "level_offset": False, "pfirrmann": "softmax",
             "backbone_lr": 1e-3}  # fmt: skip
"""The plain-CNN baseline's settings (ResNet-18 from scratch at the default 96 px), shared by its variants."""

CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config(
            "current",
            "bundled grader design: Lite0 96 px + region descriptors + level one-hot + CORAL (no stenosis head)",
            findings=("herniation", "bulging", "narrowing", "spondylolisthesis", "pfirrmann"),
            current=True,
        ),  # fmt: skip
        Config(
            "resnet18_scratch",
            "plain CNN: ResNet-18 from scratch, 96 px, 5-class cross-entropy Pfirrmann, no level input",
            **PLAIN_CNN,
        ),  # fmt: skip
        Config("lite0_64", "Lite0 ImageNet, 64 px disc crop, level offset", view=64),
        Config("lite0_96", "Lite0 ImageNet, 96 px disc crop, level offset", view=96),
        Config("lite0_128", "Lite0 ImageNet, 128 px disc crop, level offset", view=128),
        Config("lite0_96_no_level", "Lite0 ImageNet, 96 px, no level input", level_offset=False),
        Config(
            "posterior_64",
            "Lite0 ImageNet on the 64-px posterior margin + canal crop, level offset "
            "(herniation, bulging, stenosis only)",
            crop="posterior",
            view=64,
            findings=("herniation", "bulging", "stenosis"),
        ),  # fmt: skip
        # Added after the first seven configurations had been scored, to separate what made the plain
        # CNN's Pfirrmann grades better (the head or the backbone) and to give it the level offset.
        Config(
            "lite0_96_softmax",
            "lite0_96 with the plain CNN's 5-class cross-entropy Pfirrmann head",
            pfirrmann="softmax",
        ),
        Config(
            "resnet18_scratch_level",
            "plain CNN + the level offset, at 64 px",
            **(PLAIN_CNN | {"level_offset": True, "view": 64}),
        ),
        Config(
            "lite0_96_spider_only",
            "lite0_96 trained on SPIDER fit patients only (cross-cohort)",
            train_on=("spider",),
        ),  # fmt: skip
        Config(
            "lite0_96_lumbar515_only",
            "lite0_96 trained on lumbar515 fit patients only (cross-cohort)",
            train_on=("lumbar515",),
        ),  # fmt: skip
        Config(
            "resnet18_spider_only",
            "plain CNN trained on SPIDER fit patients only (cross-cohort)",
            **PLAIN_CNN,
            train_on=("spider",),
        ),  # fmt: skip
        Config(
            "resnet18_lumbar515_only",
            "plain CNN trained on lumbar515 fit patients only (cross-cohort)",
            **PLAIN_CNN,
            train_on=("lumbar515",),
        ),  # fmt: skip
    )
}


def build(config: Config) -> nn.Module:
    if config.current:
        return CurrentGrader()
    return ResearchNet(config.backbone, imagenet=config.imagenet, level_offset=config.level_offset,
                       pfirrmann=config.pfirrmann, freeze_blocks=config.freeze_blocks)  # fmt: skip


# --------------------------------------------------------------------------- training


def _loss(outputs: dict, binary: torch.Tensor, pfirrmann: torch.Tensor, config: Config,
          pos_weight: torch.Tensor) -> torch.Tensor:  # fmt: skip
    trained = torch.tensor([name in config.findings for name in FINDINGS])
    labelled = ~torch.isnan(binary) & trained.view(1, -1)
    total = outputs["binary"].new_zeros(())
    if labelled.any():
        target = torch.nan_to_num(binary)
        each = F.binary_cross_entropy_with_logits(
            outputs["binary"], target, pos_weight=pos_weight, reduction="none"
        )
        total = total + (each * labelled).sum() / labelled.sum()
    graded = ~torch.isnan(pfirrmann)
    if "pfirrmann" in config.findings and graded.any():
        grade = pfirrmann[graded].long()
        logits = outputs["pfirrmann"][graded]
        if config.pfirrmann == "coral":
            above = (grade[:, None] > torch.arange(1, 5)[None, :]).float()
            total = total + F.binary_cross_entropy_with_logits(logits, above)
        else:
            total = total + F.cross_entropy(logits, grade - 1)
    return total


def _views(crops: torch.Tensor, config: Config, generator: torch.Generator | None) -> torch.Tensor:
    if config.crop == "posterior":
        images = crops[:, None]
        if generator is None:
            return images
        shift = view_crops(F.pad(crops, (4, 4, 4, 4), mode="replicate"), crops.shape[-1], generator=generator,
                           rotation_deg=8.0, scale=0.1, translate=0.06)  # fmt: skip
        return jitter_intensity(
            shift, generator=generator, gamma=0.3, contrast=0.15, brightness=0.08, noise=0.02
        )
    if generator is None:
        return view_crops(crops, config.view)
    images = view_crops(crops, config.view, generator=generator, rotation_deg=8.0, scale=0.1, translate=0.06)
    return jitter_intensity(
        images, generator=generator, gamma=0.3, contrast=0.15, brightness=0.08, noise=0.02
    )


def train_config(config: Config, crops: torch.Tensor, table: pd.DataFrame, rows: np.ndarray,
                 seed: int = 0) -> nn.Module:  # fmt: skip
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build(config)
    binary = torch.tensor(table[list(FINDINGS)].to_numpy(np.float32))
    pfirrmann = torch.tensor(table["pfirrmann"].to_numpy(np.float32))
    levels = torch.tensor(level_index(table["ivd_label"]))
    known = ~torch.isnan(binary[rows])
    positives = torch.nansum(binary[rows], 0)
    negatives = known.sum(0) - positives
    pos_weight = (negatives / positives.clamp_min(1)).clamp_min(1e-3) ** 0.5
    backbone = {id(p) for p in (model.net.backbone if config.current else model.backbone).parameters()}
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in parameters if id(p) not in backbone], "lr": config.lr},
            {"params": [p for p in parameters if id(p) in backbone], "lr": config.backbone_lr},
        ],
        weight_decay=1e-4,
    )
    batch = 32
    steps = config.epochs * math.ceil(len(rows) / batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[config.lr, config.backbone_lr], total_steps=steps, pct_start=0.1
    )
    model.train()
    for epoch in range(config.epochs):
        order = torch.from_numpy(rows)[torch.randperm(len(rows), generator=generator)]
        losses = []
        for start in tqdm(range(0, len(order), batch), desc=f"{config.name} epoch {epoch + 1}", leave=False):
            index = order[start : start + batch]
            if len(index) < 2:
                continue
            images = _views(crops[index], config, generator)
            flip = torch.rand(len(index), generator=generator) < 0.5  # cranio-caudal: a disc reads the same
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-2), images)
            loss = _loss(model(images, levels[index]), binary[index], pfirrmann[index], config, pos_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        logger.info("%s epoch %d/%d loss %.4f", config.name, epoch + 1, config.epochs, float(np.mean(losses)))
    return model


@torch.no_grad()
def predict(model: nn.Module, config: Config, crops: torch.Tensor, levels: np.ndarray, rows: np.ndarray,
            flip: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """Binary logits and Pfirrmann outputs of ``rows`` (``flip``: cranio-caudally flipped input)."""
    model.eval()
    binary, pfirrmann = [], []
    level_tensor = torch.tensor(level_index(levels))
    for start in range(0, len(rows), 128):
        index = torch.from_numpy(rows[start : start + 128])
        images = _views(crops[index], config, None)
        out = model(images.flip(-2) if flip else images, level_tensor[index])
        binary.append(out["binary"].numpy())
        pfirrmann.append(out["pfirrmann"].numpy())
    return {"binary": np.concatenate(binary), "pfirrmann": np.concatenate(pfirrmann)}


def expected_grade(pfirrmann_outputs: np.ndarray, kind: str) -> np.ndarray:
    """Expected Pfirrmann grade (1-5) from CORAL cumulative logits or 5-class logits."""
    if kind == "coral":
        return 1.0 + (1.0 / (1.0 + np.exp(-pfirrmann_outputs))).sum(1)
    probabilities = np.exp(pfirrmann_outputs - pfirrmann_outputs.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    return probabilities @ np.arange(1, 6)


def run_config(config: Config, work: Path, table: pd.DataFrame, split: np.ndarray,
               disc: np.ndarray, posterior: np.ndarray) -> None:  # fmt: skip
    """Train ``config`` on its fit rows; save logits (plain and flipped) of every other row."""
    out = work / f"{config.name}.npz"
    if out.is_file():
        return
    crops = (
        torch.from_numpy(posterior.astype(np.float32))
        if config.crop == "posterior"
        else resized(disc, config.view)
    )
    fit = np.flatnonzero((split == "fit") & table["cohort"].isin(config.train_on).to_numpy())
    scored = (
        np.flatnonzero(split != "fit")
        if len(config.train_on) == 2
        else np.flatnonzero((split != "fit") | ~table["cohort"].isin(config.train_on).to_numpy())
    )
    began = time.perf_counter()
    model = train_config(config, crops, table, fit)
    seconds = time.perf_counter() - began
    levels = table["ivd_label"].to_numpy()
    plain = predict(model, config, crops, levels, scored)
    flipped = predict(model, config, crops, levels, scored, flip=True)
    with atomic_path(out) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, rows=scored, binary=plain["binary"], pfirrmann=plain["pfirrmann"],
                 binary_flip=flipped["binary"], pfirrmann_flip=flipped["pfirrmann"],
                 train_seconds=seconds, n_fit=len(fit))  # fmt: skip
    logger.info("%s: trained on %d discs in %.0f s", config.name, len(fit), seconds)


# --------------------------------------------------------------------------- scoring


def level_prior(table: pd.DataFrame, fit: np.ndarray, cohort: str) -> pd.DataFrame:
    """Per-finding prevalence (Pfirrmann: mean grade) by level among ``fit`` discs of ``cohort``."""
    train = table.iloc[fit]
    train = train[train["cohort"] == cohort]
    return train.groupby("ivd_label")[[*FINDINGS, "pfirrmann"]].mean()


def _ci(result) -> list[float]:
    return [round(result.estimate, 4), round(result.lower, 4), round(result.upper, 4)]


def auroc(truth: np.ndarray, scores: np.ndarray) -> float:
    """AUROC as the Mann-Whitney statistic (ties count half, as in sklearn): the bootstrap calls it
    ~10^5 times, and sklearn's input checks cost more than the ranking."""
    positives = truth == 1
    n_positive, n_negative = int(positives.sum()), int((~positives).sum())
    if n_positive == 0 or n_negative == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def score(table: pd.DataFrame, rows: np.ndarray, binary: np.ndarray, grade: np.ndarray,
          resamples: int = RESAMPLES) -> dict:  # fmt: skip
    """AUROC per labelled finding (+ herniation sensitivity at specificity 0.88), Pfirrmann kappa;
    ``resamples`` 0 gives point estimates (the select split, where only the estimates choose)."""
    patients = table["patient"].iloc[rows].to_numpy()
    result = {}
    for k, name in enumerate(FINDINGS):
        truth = table[name].iloc[rows].to_numpy()
        known = ~np.isnan(truth) & ~np.isnan(binary[:, k])
        if known.sum() < 10 or len(np.unique(truth[known])) < 2:
            continue
        fns = {"auroc": auroc}
        if name == "herniation":
            fns["sens_at_spec"] = lambda t, s: sensitivity_at_specificity(t, s, SPECIFICITY)
        boot = bootstrap_many(fns, truth[known].astype(int), binary[known, k], groups=patients[known],
                              n_resamples=resamples)  # fmt: skip
        result[name] = {key: _ci(value) for key, value in boot.items()} | {
            "n": int(known.sum()), "positive": int(truth[known].sum())}  # fmt: skip
    truth = table["pfirrmann"].iloc[rows].to_numpy()
    known = ~np.isnan(truth) & ~np.isnan(grade)
    if known.sum() >= 10:
        predicted = np.clip(np.rint(grade[known]), 1, 5).astype(int)
        boot = bootstrap_many(
            {"kappa": lambda t, s: quadratic_kappa(t, s, [1, 2, 3, 4, 5]),
             "exact": lambda t, s: float(np.mean(t == s))},
            truth[known].astype(int), predicted, groups=patients[known], n_resamples=resamples,
        )  # fmt: skip
        result["pfirrmann"] = {key: _ci(value) for key, value in boot.items()} | {"n": int(known.sum())}
    return result


def config_outputs(
    work: Path, name: str, rows: np.ndarray, tta: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Binary logits and expected Pfirrmann grade of a finished configuration on ``rows``
    (NaN for findings it does not train)."""
    saved = np.load(work / f"{name}.npz")
    config = CONFIGS[name]
    take = pd.Series(np.arange(len(saved["rows"])), index=saved["rows"]).loc[rows].to_numpy()
    binary, pfirrmann = saved["binary"][take], saved["pfirrmann"][take]
    if tta:
        binary = (binary + saved["binary_flip"][take]) / 2
        pfirrmann = (pfirrmann + saved["pfirrmann_flip"][take]) / 2
    labelled = {finding for cohort in config.train_on for finding in COHORT_FINDINGS[cohort]}
    for k, finding in enumerate(FINDINGS):
        if finding not in config.findings or finding not in labelled:  # an untrained head says nothing
            binary[:, k] = np.nan
    if "pfirrmann" not in config.findings:
        return binary, np.full(len(rows), np.nan)
    return binary, expected_grade(pfirrmann, config.pfirrmann)


def prior_outputs(table: pd.DataFrame, split: np.ndarray, rows: np.ndarray,
                  source: str | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The level-only prior on ``rows``: each disc scored by the fit discs of its own cohort at its
    level (or of cohort ``source``, for cross-cohort rows)."""
    fit = np.flatnonzero(split == "fit")
    priors = {cohort: level_prior(table, fit, cohort) for cohort in COHORTS}
    values = []
    for row in rows:
        prior = priors[source or table["cohort"].iat[row]]
        label = table["ivd_label"].iat[row]
        values.append(prior.loc[label] if label in prior.index else prior.mean())
    frame = pd.DataFrame(values)
    return frame[list(FINDINGS)].to_numpy(), frame["pfirrmann"].to_numpy()


def _rows(table: pd.DataFrame, split: np.ndarray, part: str, cohort: str) -> np.ndarray:
    in_cohort = np.ones(len(table), bool) if cohort == "pooled" else (table["cohort"] == cohort).to_numpy()
    return np.flatnonzero((split == part) & in_cohort)


def _quality(scores: dict, finding: str) -> float:
    """The select-split figure a choice is made on: AUROC, or kappa for Pfirrmann (pooled cohorts)."""
    entry = scores.get("select/pooled", {}).get(finding)
    if entry is None:
        return -math.inf
    return (entry["kappa"] if finding == "pfirrmann" else entry["auroc"])[0]


def table_of_results(work: Path, table: pd.DataFrame, split: np.ndarray) -> dict:
    """Scores of the level prior, every finished two-cohort configuration (plain and with flip TTA),
    the per-finding choice and a 3-member ensemble (both chosen on *select*), on select and report
    per cohort and pooled; cross-cohort scores of the single-cohort configurations."""
    parts = [(part, cohort) for part in ("select", "report") for cohort in (*COHORTS, "pooled")]
    outputs: dict[str, dict] = {"level_prior": {}}
    for part, cohort in parts:
        outputs["level_prior"][(part, cohort)] = prior_outputs(
            table, split, _rows(table, split, part, cohort)
        )
    finished = [n for n, c in CONFIGS.items() if (work / f"{n}.npz").is_file() and len(c.train_on) == 2]
    for name in finished:
        for tta in (False, True):
            label = name + (" +flip TTA" if tta else "")
            outputs[label] = {
                key: config_outputs(work, name, _rows(table, split, *key), tta) for key in parts
            }

    def scored(by_part: dict) -> dict:
        return {
            f"{p}/{c}": score(
                table, _rows(table, split, p, c), *by_part[(p, c)], 0 if p == "select" else RESAMPLES
            )
            for p, c in parts
        }

    results = {label: scored(by_part) for label, by_part in outputs.items()}
    candidates = [label for label in outputs if label != "level_prior"]
    choice, members = {}, {}
    for finding in (*FINDINGS, "pfirrmann"):
        ranked = sorted(candidates, key=lambda label: -_quality(results[label], finding))
        ranked = [label for label in ranked if math.isfinite(_quality(results[label], finding))]
        if not ranked:
            continue
        choice[finding] = ranked[0]
        distinct: list[str] = []  # one variant (plain or TTA) per configuration
        for label in ranked:
            if label.split(" ")[0] not in {m.split(" ")[0] for m in distinct}:
                distinct.append(label)
        members[finding] = distinct[:3]
    for label, picks in (
        ("selected on select", {f: [m] for f, m in choice.items()}),
        ("ensemble of 3", members),
    ):
        combined = {}
        for key in parts:
            n = len(_rows(table, split, *key))
            binary, grade = np.full((n, len(FINDINGS)), np.nan), np.full(n, np.nan)
            for finding, chosen in picks.items():
                if finding == "pfirrmann":
                    grade = np.mean([outputs[m][key][1] for m in chosen], 0)
                else:
                    k = FINDINGS.index(finding)
                    binary[:, k] = np.mean([outputs[m][key][0][:, k] for m in chosen], 0)
            combined[key] = (binary, grade)
        results[label] = scored(combined)
    results["_choices"] = {"selected": choice, "ensemble": members}
    for name, config in CONFIGS.items():
        if not (work / f"{name}.npz").is_file() or len(config.train_on) != 1:
            continue
        source = config.train_on[0]
        other = next(c for c in COHORTS if c != source)
        rows = np.flatnonzero((table["cohort"] == other).to_numpy())
        results.setdefault(name, {})[f"cross/{other}"] = score(table, rows, *config_outputs(work, name, rows))
        results.setdefault(f"level_prior from {source}", {})[f"cross/{other}"] = score(
            table, rows, *prior_outputs(table, split, rows, source)
        )
    return results


COLUMNS = (
    ("spider", "herniation", "auroc"),
    ("spider", "herniation", "sens_at_spec"),
    ("spider", "bulging", "auroc"),
    ("spider", "narrowing", "auroc"),
    ("spider", "pfirrmann", "kappa"),
    ("lumbar515", "bulging", "auroc"),
    ("lumbar515", "stenosis", "auroc"),
    ("lumbar515", "pfirrmann", "kappa"),
    ("pooled", "bulging", "auroc"),
    ("pooled", "pfirrmann", "kappa"),
)


def _cell(entry: dict | None, metric: str) -> str:
    if not entry or metric not in entry or not math.isfinite(entry[metric][0]):
        return "–"
    estimate, low, high = entry[metric]
    if not (math.isfinite(low) and math.isfinite(high)):  # select: point estimates only
        return f"{estimate:.2f}"
    return f"{estimate:.2f} ({low:.2f}–{high:.2f})"


def markdown(results: dict, part: str) -> str:
    """One row per model; columns are :data:`COLUMNS` on ``part`` ('report', 'select' or 'cross')."""
    header = [
        f"{c} {f}{' sens@spec0.88' if m == 'sens_at_spec' else ' κ' if m == 'kappa' else ''}"
        for c, f, m in COLUMNS
    ]
    lines = ["| model | " + " | ".join(header) + " |", "|" + " --- |" * (len(COLUMNS) + 1)]
    for label, scores in results.items():
        if label.startswith("_"):
            continue
        cells = [
            _cell(scores.get(f"{part}/{cohort}", {}).get(finding), metric)
            for cohort, finding, metric in COLUMNS
        ]
        if all(cell == "–" for cell in cells):
            continue
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spider", type=Path, required=True)
    parser.add_argument("--lumbar515", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/grader_research"))
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, in order")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="only score the finished configurations")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    table = load_samples(args.work, args.spider, args.lumbar515)
    split = fixed_split(table, args.work)
    counts = pd.crosstab(table["cohort"], split)
    logger.info("discs per cohort and split:\n%s", counts)
    if not args.table:
        disc, posterior = load_crops(args.work, table, {"spider": args.spider, "lumbar515": args.lumbar515})
        for name in args.configs.split(","):
            if name not in CONFIGS:
                raise SystemExit(f"--configs: unknown configuration '{name}' (known: {', '.join(CONFIGS)})")
            run_config(CONFIGS[name], args.work, table, split, disc, posterior)
    results = table_of_results(args.work, table, split)
    results["_discs"] = {f"{c}/{s}": int(n) for (c, s), n in counts.stack().items()}
    atomic_write_text(args.work / "results.json", json.dumps(results, indent=1))
    atomic_write_text(
        args.work / "results.md",
        "".join(f"### {part}\n\n{markdown(results, part)}\n" for part in ("report", "select", "cross")),
    )
    logger.info("wrote %s and results.md", args.work / "results.json")


if __name__ == "__main__":
    main()
