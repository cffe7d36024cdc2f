"""Distances between a real and a generated image set in a feature space, computed by torch-fidelity.

The features come from the project's extractors (the judge's pooled features on shapes, a CLIP's
image embeddings, Inception where its weights are present); the metrics are torch-fidelity's own
feature-level functions, so the numbers are the library's, not a re-implementation:

- Fréchet distance (Heusel et al. 2017): ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^½) of Gaussians fitted
  to the two feature sets (FID when the features are Inception's pool3).
- Kernel distance, KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel,
  mean and standard deviation over random subsets.
- Precision and recall (Kynkäänniemi et al. 2019): the share of generated samples inside the union of
  the real samples' k-nearest-neighbour balls, and the share of real samples inside the generated ones'.
"""

from __future__ import annotations

import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric


def feature_distances(
    real: torch.Tensor, generated: torch.Tensor, neighbourhood: int = 3, kid_subsets: int = 100, seed: int = 0
) -> dict[str, float]:
    """``fd``, ``kid``, ``kid_std``, ``precision`` and ``recall`` between two N x D feature sets.

    The KID subset size is min(1000, both set sizes) (torch-fidelity's default is 1000).
    """
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"Need two N x D feature sets of the same D, got {tuple(real.shape)} and {tuple(generated.shape)}")
    if min(len(real), len(generated)) <= neighbourhood:
        raise ValueError(f"Need more than {neighbourhood} samples per set (k = {neighbourhood} nearest neighbours)")
    real, generated = real.detach().float().cpu(), generated.detach().float().cpu()
    fd = fid_statistics_to_metric(fid_features_to_statistics(real), fid_features_to_statistics(generated), verbose=False)
    kid = kid_features_to_metric(  # torch-fidelity's defaults otherwise: cubic kernel, gamma 1/D, coef0 1
        real, generated, kid_subsets=kid_subsets, kid_subset_size=min(1000, len(real), len(generated)),
        rng_seed=seed, verbose=False,
    )  # fmt: skip
    # torch-fidelity's convention: generated first, real second
    prc = prc_features_to_metric(generated, real, prc_neighborhood=neighbourhood, verbose=False)
    return {
        "fd": fd["frechet_inception_distance"],
        "kid": kid["kernel_inception_distance_mean"],
        "kid_std": kid["kernel_inception_distance_std"],
        "precision": prc["precision"],
        "recall": prc["recall"],
    }
