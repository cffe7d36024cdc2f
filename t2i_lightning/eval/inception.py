"""Inception-space metrics (FID, IS, KID, precision/recall), only from Inception weights present locally.

torch-fidelity's TensorFlow-compatible InceptionV3 (the network FID and IS are defined with) needs
``weights-inception-2015-12-05-6726825d.pth``: from ``--inception-weights PATH`` or torch hub's cache
(``<torch hub dir>/checkpoints/``, where torch-fidelity puts it on a machine with internet). These
machines are offline, so without the file the table's Inception cells say "no Inception weights":
no other network is substituted.

On its 2048-d pool3 features: FID (Heusel et al. 2017), KID (Bińkowski et al. 2018) and precision/recall
(Kynkäänniemi et al. 2019, k = 3), by the same :func:`~t2i_lightning.metrics.distances.feature_distances`
as the judge and CLIP spaces; on its unbiased logits, IS (Salimans et al. 2016): exp E_x KL(p(y|x) ‖ p(y)).

The weights file is read with ``torch.load(weights_only=True)``, so no pickled code in it runs (torch-fidelity
itself unpickles its file with ``weights_only=False``); a file that is not an Inception-v3 state dict is refused
naming it.
"""

from __future__ import annotations

import io
import os

import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_isc import isc_features_to_metric

from ..metrics.distances import feature_distances
from ..training.checkpoint_io import error_summary

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
MISSING = "no Inception weights"
FEATURES = ["2048", "logits_unbiased"]  # pool3 features, logits without the fc bias (torch-fidelity's IS input)
INCEPTION_KEYS = ("fid", "is", "inception_kid", "inception_precision", "inception_recall")
"""The table's Inception columns: present (or saying why not) in every table."""


def find_inception_weights(path: str | None = None) -> str | None:
    """``path`` when given (it must exist), else torch hub's cached copy if there is one, else None."""
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Inception weights not found: {path}")
        return path
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", WEIGHTS_FILE)
    return cached if os.path.isfile(cached) else None


def read_inception_state(path: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, unpickled with ``weights_only=True``; anything else is refused naming ``path``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not a tensor pickle
        raise ValueError(f"{path} is not an Inception-v3 state dict ({error_summary(error)})") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not an Inception-v3 state dict (not a mapping of parameter names to tensors)")
    return state


def inception_network(path: str, device: torch.device | str = "cpu") -> FeatureExtractorInceptionV3:
    """torch-fidelity's InceptionV3 with the weights in ``path`` (read safely), frozen, on ``device``."""
    buffer = io.BytesIO()
    torch.save(read_inception_state(path), buffer)  # what torch-fidelity unpickles: tensors, written here
    buffer.seek(0)
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", FEATURES, feature_extractor_weights_path=buffer)
    except RuntimeError as error:  # load_state_dict: missing or unexpected names, wrong shapes
        reason = (str(error).splitlines()[1:] or [str(error)])[0].strip()[:160]
        raise ValueError(f"{path} is not an Inception-v3 state dict for torch-fidelity's InceptionV3 ({reason})") from None
    return net.to(device)


class InceptionInstrument:
    """The Inception-space metrics of images against reference features, or nothing when the weights are
    missing (``available`` False; ``status`` says why). The network runs on ``device``; its features come
    back to the CPU."""

    def __init__(self, weights: str | None, device: torch.device | str = "cpu", batch_size: int = 50):
        self.weights = weights
        self.batch_size = batch_size
        self.available = weights is not None
        self.status = f"Inception-v3 (torch-fidelity, {weights})" if weights else MISSING
        self._net = inception_network(weights, device) if weights else None

    @torch.no_grad()
    def _extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self._net.parameters()).device
        pools, logits = [], []
        for start in range(0, len(images), self.batch_size):
            batch = ((images[start : start + self.batch_size].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            pool, logit = self._net(batch.to(device))
            pools.append(pool.cpu())
            logits.append(logit.cpu())
        return torch.cat(pools), torch.cat(logits)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """N x 2048 pool3 features of N x 3 x S x S images in [-1, 1] (quantised to 8 bits, as saved images)."""
        return self._extract(images)[0]

    def scores(self, images: torch.Tensor, reference_features: torch.Tensor | None) -> dict[str, float]:
        """``fid``, ``inception_kid`` (and ``_kid_std``), ``inception_precision``, ``inception_recall`` against
        ``reference_features``, and ``is``; empty when the weights are missing."""
        if not self.available or reference_features is None:
            return {}
        pool, logits = self._extract(images)
        distances = feature_distances(reference_features, pool)
        inception_score = isc_features_to_metric(logits, splits=min(10, len(images)))
        return {
            "fid": distances["fd"], "is": inception_score["inception_score_mean"],
            **{f"inception_{key}": distances[key] for key in ("kid", "kid_std", "precision", "recall")},
        }  # fmt: skip
