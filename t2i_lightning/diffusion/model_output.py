"""From a raw network output to the reverse-process Gaussian p_θ(x_{t−1} | x_t)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from .parameterization import eps_from_x0, predict_x0_eps
from .process import q_posterior
from .schedules import NoiseSchedule, extract
from .variance import learned_range_log_variance, split_learned_variance


@dataclass
class Prediction:
    """The reverse step p_θ(x_{t−1} | x_t) = N(mean, variance) and the x̂_0, ε̂ it was built from.

    ``mean``, ``x0`` and ``eps`` have x_t's shape; ``variance`` and ``log_variance`` broadcast against it.
    """

    mean: Tensor
    variance: Tensor
    log_variance: Tensor
    x0: Tensor
    eps: Tensor


def p_mean_variance(
    schedule: NoiseSchedule,
    raw_output: Tensor,
    xt: Tensor,
    t: Tensor,
    *,
    parameterization: str = "eps",
    learn_variance: bool = False,
    x0_transform: Callable[[Tensor], Tensor] | None = None,
) -> Prediction:
    """Reverse-step mean and variance from a network output (Ho et al. 2020, "DDPM", eqs. 7 and 11).

    ``t`` indexes this schedule's steps. The network prediction (any of ε/x_0/v) gives x̂_0; an optional
    ``x0_transform`` (e.g. dynamic thresholding, Saharia et al. 2022 sec. 2.3) is applied to x̂_0 and ε̂
    re-derived from the result; the mean is the posterior mean μ̃_t(x_t, x̂_0) of DDPM eq. 7. The
    variance is learned (Nichol & Dhariwal 2021 eq. 15; ``raw_output`` then has 2C channels, the last C
    for the variance) or fixed to β̃_t (DDPM sec. 3.2, with the clipped log of Improved DDPM).
    """
    if learn_variance:
        prediction, variance_raw = split_learned_variance(raw_output, xt)
        log_variance = learned_range_log_variance(schedule, t, variance_raw, xt)
        variance = log_variance.exp()
    else:
        prediction = raw_output
        variance = extract(schedule.posterior_variance, t, xt)
        log_variance = extract(schedule.posterior_log_variance_clipped, t, xt)
    x0, eps = predict_x0_eps(schedule, xt, t, prediction, parameterization)
    if x0_transform is not None:
        x0 = x0_transform(x0)
        eps = eps_from_x0(schedule, xt, t, x0)
    mean, _, _ = q_posterior(schedule, x0, xt, t)
    return Prediction(mean=mean, variance=variance, log_variance=log_variance, x0=x0, eps=eps)
