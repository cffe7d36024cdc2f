"""open_clip pretrained tags from the Hugging Face Hub, and a fast, clear failure where it cannot be reached.

Offline (``HF_HUB_OFFLINE`` set, or the Hub's host not reachable within :data:`HUB_PROBE_TIMEOUT_S`) the
Hub client is asked for its cache only, so weights not there fail at once, naming the local-file route
first, instead of after the client's retries (20 lines and about a minute).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator

import open_clip
import torch
from huggingface_hub import constants as hub_constants


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained CLIP weights that cannot be found or loaded."""


def _weights_locations() -> str:
    hf = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
    return f"the Hugging Face cache ({hf}) or ~/.cache/clip"


HUB_PROBE_TIMEOUT_S = 1.5
"""How long :func:`_hub_offline_reason` waits for a connection to the Hugging Face Hub."""


def clip_from_tag(model_name: str, tag: str) -> torch.nn.Module:
    """``model_name`` with the weights of an open_clip pretrained tag: from the Hugging Face cache, or
    downloaded. Offline (``HF_HUB_OFFLINE`` set, or the Hub not reachable) only the cache is asked, so
    that weights not there fail at once instead of after the Hub client's retries. A tag of OpenAI's
    weights gets QuickGELU (its config says so; open_clip only warns)."""
    offline = _hub_offline_reason()
    quick_gelu = bool(open_clip.get_pretrained_cfg(model_name, tag).get("quick_gelu"))
    try:
        with _hub_offline(bool(offline)):
            return open_clip.create_model(model_name, pretrained=tag, force_quick_gelu=quick_gelu)
    except Exception as error:  # network, hub and cache errors all mean "not available here"
        why = offline or f"{type(error).__name__}: {' '.join(str(error).split())}"
        raise PretrainedWeightsError(
            f"Pass the {model_name} weights file instead: CLIP=/path/to/open_clip_model.safetensors (make) or "
            f"pretrained: /path/to/open_clip_model.safetensors (YAML). The tag {tag!r} cannot be loaded here "
            f"({why}); its weights are downloaded into {_weights_locations()} where there is internet."
        ) from error


def _hub_offline_reason() -> str | None:
    """Why the Hugging Face Hub cannot be asked for weights: offline mode set, or its host not reachable
    within :data:`HUB_PROBE_TIMEOUT_S` (no probe through a proxy, which the Hub client uses itself); None
    when it can."""
    if hub_constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set and they are not in the cache"
    host = urllib.parse.urlparse(hub_constants.ENDPOINT).hostname
    if "https" in urllib.request.getproxies() or _reachable(host, 443):
        return None
    return f"{host} cannot be reached and they are not in the cache"


def _reachable(host: str, port: int, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds, the name lookup
    included (it ignores socket timeouts, so the probe runs in a daemon thread that is not waited for)."""
    opened: list[bool] = []

    def probe() -> None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
            opened.append(True)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """The Hugging Face Hub client in offline mode (the cache only) while open_clip resolves a tag, when
    ``offline``: the client reads the setting at each call, the environment only at its import."""
    saved = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved
