"""Inception FID and IS, only where the Inception weights are present locally.

torch-fidelity's TensorFlow-compatible InceptionV3 (the network FID and IS are defined with) needs
``weights-inception-2015-12-05-6726825d.pth``: from ``--inception-weights PATH`` or torch hub's cache
(``<torch hub dir>/checkpoints/``, where torch-fidelity puts it on a machine with internet). These
machines are offline, so without the file the table's FID and IS cells say "no Inception weights":
no other network is substituted. torch-fidelity loads that file with ``torch.load(weights_only=False)``:
give it only a file you trust.
"""

from __future__ import annotations

import os

import torch
from torch_fidelity.metric_isc import isc_features_to_metric

from ..metrics.distances import feature_distances

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
MISSING = "no Inception weights"


def find_inception_weights(path: str | None = None) -> str | None:
    """``path`` when given (it must exist), else torch hub's cached copy if there is one, else None."""
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Inception weights not found: {path}")
        return path
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", WEIGHTS_FILE)
    return cached if os.path.isfile(cached) else None


class InceptionInstrument:
    """FID (Fréchet distance of pool3 features) and IS (from the unbiased logits), or nothing when
    the weights are missing (``available`` False; ``status`` says why)."""

    def __init__(self, weights: str | None, batch_size: int = 50):
        self.weights = weights
        self.batch_size = batch_size
        self.available = weights is not None
        self.status = f"Inception-v3 (torch-fidelity, {weights})" if weights else MISSING
        self._net = None

    def _extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._net is None:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

            self._net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=self.weights
            )
        pools, logits = [], []
        for start in range(0, len(images), self.batch_size):
            batch = ((images[start : start + self.batch_size].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            with torch.no_grad():
                pool, logit = self._net(batch)
            pools.append(pool)
            logits.append(logit)
        return torch.cat(pools), torch.cat(logits)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self._extract(images)[0]

    def scores(self, images: torch.Tensor, reference_features: torch.Tensor | None) -> dict[str, float]:
        """``fid`` against ``reference_features`` and ``is``; empty when the weights are missing."""
        if not self.available or reference_features is None:
            return {}
        pool, logits = self._extract(images)
        inception_score = isc_features_to_metric(logits, splits=min(10, len(images)))
        return {"fid": feature_distances(reference_features, pool)["fd"],
                "is": inception_score["inception_score_mean"]}  # fmt: skip
