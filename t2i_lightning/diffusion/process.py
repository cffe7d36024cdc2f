"""The forward (noising) process and its Gaussian posterior (Ho et al. 2020, "DDPM")."""

from __future__ import annotations

from torch import Tensor

from .schedules import NoiseSchedule, extract


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Draw x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) (DDPM eq. 4) with the given ε ~ N(0, I)."""
    return (
        extract(schedule.sqrt_alphas_cumprod, t, x0) * x0
        + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise
    )


def q_posterior(schedule: NoiseSchedule, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, variance and clipped log variance of q(x_{t−1} | x_t, x_0) (DDPM eqs. 6–7).

    μ̃_t = √ᾱ_{t−1} β_t/(1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t) · x_t and β̃_t. The mean has
    x_t's shape; variance and log variance are [B, 1, …] and broadcast against it.
    """
    mean = (
        extract(schedule.posterior_mean_coef1, t, xt) * x0
        + extract(schedule.posterior_mean_coef2, t, xt) * xt
    )
    variance = extract(schedule.posterior_variance, t, xt)
    log_variance = extract(schedule.posterior_log_variance_clipped, t, xt)
    return mean, variance, log_variance
