"""Run the review service with uvicorn, refusing to expose it without a token."""

from __future__ import annotations

import ipaddress
import os
import secrets

import uvicorn

from spinedx.errors import InputError
from spinedx.serve.app import create_app
from spinedx.serve.settings import LOOPBACK_HOSTS, TOKEN_ENV, ServeSettings


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, environ: dict[str, str] | None = None) -> tuple[str, bool]:
    """(token, generated): SPINEDX_TOKEN, or a fresh random one for a loopback-only server.

    Without SPINEDX_TOKEN a server reachable from other machines would be open to anyone who
    can guess nothing at all, so that is refused.
    """
    token = (os.environ if environ is None else environ).get(TOKEN_ENV, "")
    if token:
        return token, False
    if not is_loopback(host):
        raise InputError(f"--host {host}: set {TOKEN_ENV} before serving on an address other than loopback")
    return secrets.token_urlsafe(24), True


def serve(settings: ServeSettings, host: str, port: int) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM: the workers finish the study in hand)."""
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=30)
