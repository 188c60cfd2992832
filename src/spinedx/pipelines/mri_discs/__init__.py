"""Sagittal MRI disc pipeline: find every intervertebral disc and name its level."""

from spinedx.pipelines.mri_discs.localize import DiscDetection, DiscLocalizer

__all__ = ["DiscDetection", "DiscLocalizer"]
