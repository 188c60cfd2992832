"""Rotated-rectangle geometry shared by the synthetic radiograph and MRI generators."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Frame:
    """A rotated rectangle: centre, angle of its ``v`` axis from the image +y axis, size."""

    cx: float
    cy: float
    theta: float
    w: float
    h: float

    def to_image(self, u, v):
        """Image (x, y) of local (u, v)."""
        c, s = math.cos(self.theta), math.sin(self.theta)
        return self.cx + u * c + v * s, self.cy - u * s + v * c

    def to_local(self, x, y):
        """Local (u, v) of image (x, y)."""
        c, s = math.cos(self.theta), math.sin(self.theta)
        dx, dy = x - self.cx, y - self.cy
        return dx * c - dy * s, dx * s + dy * c

    @property
    def back(self) -> tuple[float, float]:
        """Unit vector of the local ``u`` axis (posterior) in the image."""
        return math.cos(self.theta), -math.sin(self.theta)
