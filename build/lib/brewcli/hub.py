"""Reaching the Hugging Face Hub. Without a network, huggingface_hub retries for half a minute before it
gives up; brew asks once, with a short timeout, and then works from the local cache only."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse

TRUE = {"1", "true", "yes", "on"}


def offline_by_env() -> bool:
    return any(os.environ.get(v, "").lower() in TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                                  "HF_DATASETS_OFFLINE"))


@lru_cache(maxsize=1)
def unreachable() -> str | None:
    """Why the Hub cannot be reached (and offline mode is now on), or None when it can be (or is off by choice).

    Behind a proxy the probe is skipped: the proxy, not a direct connection, decides."""
    if offline_by_env():
        return "offline mode is on (HF_HUB_OFFLINE)"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=float(os.environ.get("BREW_HUB_TIMEOUT", "5"))).close()
        return None
    except OSError as e:
        reason = f"{host}:{port} cannot be reached ({e.strerror or e})"
    go_offline()
    return reason


def go_offline() -> None:
    """Switch huggingface_hub, transformers and datasets to their local caches for the rest of the process."""
    import huggingface_hub.constants as hub_constants

    hub_constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass


def not_found(ref: str, what: str, error: Exception) -> str:
    """The message for a Hub id that could not be loaded: offline and not cached, or not on the Hub."""
    why = unreachable()
    if why:
        return (f"'{ref}' is not a local folder and not in the local Hugging Face cache, and the Hub cannot be "
                f"used: {why}")
    return f"'{ref}' is neither a local folder nor a {what} we could fetch from the Hugging Face Hub " \
           f"({str(error).splitlines()[0][:160]})"
