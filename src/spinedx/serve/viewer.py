"""The review viewer: the Vite build of web/ (committed under serve/static) served without a token.

The page asks for the token itself and sends it as a header on every /api/ call, so nothing here
needs authentication.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter()
# check_dir=False: a checkout without the build still imports; the page then answers 404.
router.mount("/assets", StaticFiles(directory=STATIC_DIR / "assets", check_dir=False), name="viewer-assets")


@router.get("/", include_in_schema=False)
def viewer_page() -> FileResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        raise HTTPException(404, "the viewer is not built: run `make viewer`")
    return FileResponse(page, headers={"Cache-Control": "no-cache"})
