"""Conversions between the three things a denoiser can predict: ε, x_0 and v.

With a_t = √ᾱ_t and b_t = √(1 − ᾱ_t), x_t = a_t x_0 + b_t ε (Ho et al. 2020, "DDPM", eq. 4) and
v = a_t ε − b_t x_0 (Salimans & Ho 2022, "Progressive distillation", sec. 4 and appendix D); since
a_t² + b_t² = 1 each pair determines the third.
"""

from __future__ import annotations

from torch import Tensor

from .schedules import NoiseSchedule, extract

PARAMETERIZATIONS = ("eps", "x0", "v")


def _coefficients(schedule: NoiseSchedule, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(√ᾱ_t, √(1 − ᾱ_t)) shaped to broadcast against ``like``."""
    a = extract(schedule.sqrt_alphas_cumprod, t, like)
    return a, extract(schedule.sqrt_one_minus_alphas_cumprod, t, like)


def x0_from_eps(schedule: NoiseSchedule, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x̂_0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t: DDPM eq. 4 solved for x_0 (the x̂_0 of DDIM eq. 9)."""
    a, b = _coefficients(schedule, t, xt)
    return (xt - b * eps) / a


def eps_from_x0(schedule: NoiseSchedule, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """ε̂ = (x_t − √ᾱ_t x_0)/√(1 − ᾱ_t): DDPM eq. 4 solved for ε."""
    a, b = _coefficients(schedule, t, xt)
    return (xt - a * x0) / b


def v_from_x0_eps(schedule: NoiseSchedule, t: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
    """v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (Salimans & Ho 2022, sec. 4)."""
    a, b = _coefficients(schedule, t, x0)
    return a * eps - b * x0


def x0_from_v(schedule: NoiseSchedule, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
    """x̂_0 = √ᾱ_t x_t − √(1 − ᾱ_t) v (Salimans & Ho 2022, appendix D)."""
    a, b = _coefficients(schedule, t, xt)
    return a * xt - b * v


def eps_from_v(schedule: NoiseSchedule, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
    """ε̂ = √(1 − ᾱ_t) x_t + √ᾱ_t v (Salimans & Ho 2022, appendix D)."""
    a, b = _coefficients(schedule, t, xt)
    return b * xt + a * v


def predict_x0_eps(
    schedule: NoiseSchedule, xt: Tensor, t: Tensor, prediction: Tensor, parameterization: str
) -> tuple[Tensor, Tensor]:
    """Both x̂_0 and ε̂ from a network output in any of ``PARAMETERIZATIONS``.

    "eps": Ho et al. 2020 (eq. 11); "x0": the direct mean-of-x_0 prediction Ho et al. compare against
    (sec. 3.2); "v": Salimans & Ho 2022 (sec. 4).
    """
    if parameterization == "eps":
        return x0_from_eps(schedule, xt, t, prediction), prediction
    if parameterization == "x0":
        return prediction, eps_from_x0(schedule, xt, t, prediction)
    if parameterization == "v":
        return x0_from_v(schedule, xt, t, prediction), eps_from_v(schedule, xt, t, prediction)
    raise ValueError(f"unknown parameterization {parameterization!r}; valid: {PARAMETERIZATIONS}")
