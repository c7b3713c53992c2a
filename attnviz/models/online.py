"""Fail fast offline: before timm fetches pretrained weights, a short probe of the host it
would fetch them from (or of the HTTPS proxy in the environment). Unreachable, the fetch runs
in Hugging Face offline mode, so weights already in the local cache still load; anything else
fails at once instead of after a minute of retries. ``HF_HUB_OFFLINE=1`` skips the probe."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator

#: seconds the probe may take, name lookup included
PROBE_TIMEOUT_S = 2.0


def weights_source(name: str) -> tuple[str, str | None, tuple[str, ...]]:
    """Where timm fetches ``name``'s pretrained weights: (URL of the host, HF hub repo id or
    None for a plain URL, the file names timm tries there)."""
    from huggingface_hub import constants
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
        names = ((cfg.hf_hub_filename,) if cfg.hf_hub_filename
                 else ("model.safetensors", "pytorch_model.bin"))
        return constants.ENDPOINT, cfg.hf_hub_id, names
    url = cfg.url if cfg is not None and cfg.url else constants.ENDPOINT
    return url, None, (os.path.basename(urllib.parse.urlsplit(url).path),)


def cached(repo: str | None, names: tuple[str, ...]) -> bool:
    """Is one of the files already in the local cache (the HF hub's, or torch.hub's for a
    plain URL)?"""
    if repo is None:
        import torch.hub

        folder = os.path.join(torch.hub.get_dir(), "checkpoints")
        return any(n and os.path.isfile(os.path.join(folder, n)) for n in names)
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo.partition("@")
    return any(isinstance(try_to_load_from_cache(repo_id, n, revision=revision or None), str)
               for n in names)


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can a TCP connection to ``url``'s host (or the HTTPS / HTTP proxy the environment names
    for it) be opened within ``timeout`` seconds? The lookup runs in a daemon thread, so a
    hanging name lookup counts as unreachable too."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    proxy = urllib.request.getproxies().get(parts.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ok = threading.Event()

    def probe() -> None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout):
            ok.set()

    thread = threading.Thread(target=probe, daemon=True, name="attnviz-probe")
    thread.start()
    thread.join(timeout)
    return ok.is_set()


def hub_offline_requested() -> bool:
    """Is Hugging Face offline mode on (``HF_HUB_OFFLINE``)?"""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in (
        "1", "ON", "YES", "TRUE")


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face offline mode for the duration (the local cache only)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def fetch_guard(name: str) -> contextlib.AbstractContextManager[None] | None:
    """The context to fetch ``name``'s pretrained weights in: nothing special when their host
    answers, offline mode when it does not (or ``HF_HUB_OFFLINE`` is set) and the weights are
    in the local cache. None when they are neither reachable nor cached: fetching could only
    fail, so the caller says so before building the model."""
    url, repo, names = weights_source(name)
    if not hub_offline_requested() and reachable(url):
        return contextlib.nullcontext()
    if not cached(repo, names):
        return None
    return hub_offline() if repo is not None else contextlib.nullcontext()


__all__ = ["PROBE_TIMEOUT_S", "fetch_guard", "hub_offline_requested", "reachable"]
