"""Sagittal MRI disc pipeline: find every intervertebral disc and name its level."""

from spinedx.tasks.disc_localization.model import DiscDetection, DiscLocalizer

__all__ = ["DiscDetection", "DiscLocalizer"]
