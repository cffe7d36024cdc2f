"""Training losses. Each returns one value per sample (shape [B]) unless noted; the caller reduces."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .model_output import p_mean_variance
from .parameterization import v_from_x0_eps
from .process import q_posterior
from .schedules import NoiseSchedule
from .variance import split_learned_variance


def _mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the first."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise (broadcasting), in nats.

    The closed form used for the L_{t−1} terms of the variational bound (Ho et al. 2020, "DDPM", eq. 5):
    ½ (−1 + logvar2 − logvar1 + e^{logvar1 − logvar2} + (mean1 − mean2)² e^{−logvar2}).
    """
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log p(x) for data in [−1, 1] quantised to 256 levels, under N(means, e^{2 log_scales}).

    Ho et al. 2020 ("DDPM"), eq. 13: the mass of the bin [x − 1/255, x + 1/255], with the outer bins
    extended to ±∞; as used for L_0 by Nichol & Dhariwal 2021. Elementwise, in nats.
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    upper = inv_std * (centered + 1.0 / 255)
    lower = inv_std * (centered - 1.0 / 255)
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_survival_lower = torch.special.log_ndtr(-lower)
    log_bin = (torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=1e-12).log()
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_survival_lower, log_bin))


def simple_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """L_simple (Ho et al. 2020, eq. 14): squared error averaged over every non-batch dimension, [B]."""
    return _mean_flat((prediction - target) ** 2)


def vlb_terms(
    schedule: NoiseSchedule, x0: Tensor, xt: Tensor, t: Tensor, mean: Tensor, log_variance: Tensor
) -> Tensor:
    """The variational bound term L_t of one step per sample, in bits per dimension, shape [B].

    t > 0: KL(q(x_{t−1} | x_t, x_0) || N(mean, e^log_variance)) (Ho et al. 2020 eq. 5); t = 0: the
    discretized decoder NLL −log p(x_0 | x_1) (eq. 13). Averaged over dimensions and divided by ln 2
    (Nichol & Dhariwal 2021 report the bound in bits/dim).
    """
    true_mean, _, true_log_variance = q_posterior(schedule, x0, xt, t)
    kl = _mean_flat(normal_kl(true_mean, true_log_variance, mean, log_variance))
    nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_variance))
    return torch.where(t.to(kl.device) == 0, nll, kl) / math.log(2.0)


def hybrid_loss(
    schedule: NoiseSchedule,
    raw_output: Tensor,
    x0: Tensor,
    xt: Tensor,
    t: Tensor,
    noise: Tensor,
    *,
    parameterization: str = "eps",
    vlb_weight: float = 1e-3,
    learn_variance: bool = True,
    weights: Tensor | None = None,
) -> dict[str, Tensor]:
    """L_hybrid = L_simple + λ L_vlb of Nichol & Dhariwal 2021 ("Improved DDPM", eq. 16), per sample.

    Returns ``{"simple", "vlb", "loss"}``, each [B]:

    - "simple": mean squared error of the prediction (first C channels) to its target, ε, x_0 or
      v = √ᾱ ε − √(1 − ᾱ) x_0 per ``parameterization`` (Ho et al. 2020 eq. 14; Salimans & Ho 2022).
    - "vlb": T · L_t in bits/dim, the single-sample unbiased estimate of L_vlb = Σ_t L_t for uniformly
      drawn t (T = ``schedule.num_steps``). L_t is computed with a stop-gradient on the mean prediction
      (Improved DDPM sec. 3.1), so only the variance channels learn from it. With λ = 1e-3 and T = 1000,
      λ·T·L_t = L_t, which is the published behaviour (the reference code adds L_t · T/1000).
    - "loss": simple · ``weights`` (e.g. :func:`p2_weights`; omitted: 1) + ``vlb_weight`` · vlb. Without
      a learned variance the vlb is still reported (fixed β̃_t, no gradient) but not added.

    The math runs in x_t's dtype (float32 in training), also when the network ran in bf16.
    """
    raw_output = raw_output.to(xt.dtype)
    if learn_variance:
        prediction, variance_raw = split_learned_variance(raw_output, x0)
        frozen_mean_output = torch.cat([prediction.detach(), variance_raw], dim=1)
    else:
        prediction, frozen_mean_output = raw_output, raw_output.detach()
    targets = {"eps": noise, "x0": x0, "v": v_from_x0_eps(schedule, t, x0, noise)}
    if parameterization not in targets:
        raise ValueError(f"unknown parameterization {parameterization!r}; valid: {tuple(targets)}")
    simple = simple_loss(prediction, targets[parameterization])
    out = p_mean_variance(
        schedule, frozen_mean_output, xt, t, parameterization=parameterization, learn_variance=learn_variance
    )
    vlb = vlb_terms(schedule, x0, xt, t, out.mean, out.log_variance) * schedule.num_steps
    loss = simple if weights is None else simple * weights
    if learn_variance:
        loss = loss + vlb_weight * vlb
    return {"simple": simple, "vlb": vlb, "loss": loss}


def p2_weights(schedule: NoiseSchedule, t: Tensor, gamma: float = 1.0, k: float = 1.0) -> Tensor:
    """P2 weighting (Choi et al. 2022, "Perception Prioritized Training"): λ'_t = 1/(k + SNR(t))^γ, shape [B].

    The weight is relative to L_simple's uniform λ_t; γ = 0 gives ones. Returned in the default float
    dtype on ``t``'s device.
    """
    weights = ((k + schedule.snr) ** -gamma).to(torch.get_default_dtype())
    return weights.to(t.device)[t]


def min_snr_weights(schedule: NoiseSchedule, t: Tensor, gamma: float, parameterization: str) -> Tensor:
    """Min-SNR-γ weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting", eq. 10), [B].

    Weighs each step's x̂₀ error by min(SNR(t), γ): the easy low-noise steps, where SNR is large, stop
    dominating the gradient. Expressed relative to the parameterization's own L_simple, whose error is
    the x̂₀ error times SNR ("eps"), 1 ("x0") or SNR + 1 ("v"; x₀ − x̂₀ = √(1 − ᾱ)(v̂ − v)), the weight is
    min(SNR, γ)/SNR, min(SNR, γ) or min(SNR, γ)/(SNR + 1). Returned in the default float dtype on ``t``'s device.
    """
    snr = schedule.snr.double()
    clipped = snr.clamp(max=gamma)
    relative = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}
    if parameterization not in relative:
        raise ValueError(f"unknown parameterization {parameterization!r}; valid: {tuple(relative)}")
    return relative[parameterization].to(torch.get_default_dtype()).to(t.device)[t]


def dsm_loss(score: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """Denoising score matching with λ(σ) = σ² (Song & Ermon 2019, "NCSN", eqs. 5–6), per sample [B].

    For x̃ = x + σ z the target score is −z/σ, so λ(σ)·½‖s − (−z/σ)‖² = ½‖σ s + z‖². Summed over
    dimensions as in the paper (not averaged), so its scale grows with the data dimension.
    ``sigma`` is [B] (or broadcastable to ``score``). Computed in float32 whatever the network's
    output dtype (a bf16 autocast forward).
    """
    score = score.float()
    if sigma.ndim == 1:
        sigma = sigma.reshape(-1, *([1] * (score.ndim - 1)))
    return 0.5 * ((sigma * score + noise) ** 2).reshape(score.shape[0], -1).sum(dim=1)
