"""What every HTML report shares: its Jinja2 template from the package and inlined PNG figures."""

from __future__ import annotations

import base64
from functools import cache
from importlib import resources

import jinja2


@cache
def load_template(name: str, *, strict: bool = False) -> jinja2.Template:
    """``templates/<name>`` of this package, autoescaped; ``strict`` makes a missing value an error."""
    source = resources.files("spinedx.report").joinpath("templates", name).read_text(encoding="utf-8")
    environment = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined if strict else jinja2.Undefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.from_string(source)


def png_base64(png: bytes) -> str:
    """PNG bytes as the base64 text of a ``data:image/png;base64,`` URI."""
    return base64.b64encode(bytes(png)).decode("ascii")
