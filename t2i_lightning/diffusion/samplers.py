"""Samplers: DDPM and DDIM over a (possibly respaced) NoiseSchedule, with one signature, and annealed
Langevin dynamics over the noise levels of a score network.

``model_fn(x, t)`` returns the raw network output, where t [B] holds the ORIGINAL training step
index ``schedule.timesteps[i]`` of step i. Sampling runs in float32 with autocast and autograd off
(gradient guidance re-enables autograd locally). Guidance enters as arguments: ``x0_transform`` on x̂_0,
``cond_fn`` on the mean (DDPM) or on ε̂ (DDIM), ``image_guidance`` on x_t before each model call.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .guidance import ImageGuidance, dynamic_threshold, static_threshold
from .model_output import p_mean_variance
from .parameterization import x0_from_eps
from .schedules import NoiseSchedule, extract

ModelFn = Callable[[Tensor, Tensor], Tensor]
Step = Callable[[Tensor, Tensor, int, Tensor, Tensor], tuple[Tensor, Tensor]]


def _sample_loop(
    step: Step,
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    noise: Tensor,
    image_guidance: ImageGuidance | None,
    progress: bool,
    return_intermediates: bool,
    desc: str,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """Run steps N−1 … 0: image guidance on x_t, one model call, then ``step(x, raw, i, index, t)``,
    which returns (x_{t−1}, x̂_0). ``index`` [B] indexes the schedule, ``t`` [B] is the original step."""
    x = noise.float()
    intermediates = []
    with torch.autocast(device_type=x.device.type, enabled=False), torch.no_grad():
        for i in tqdm(range(schedule.num_steps - 1, -1, -1), desc=desc, disable=not progress):
            index = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            t = torch.full_like(index, int(schedule.timesteps[i]))
            if image_guidance is not None:
                x = image_guidance(x, t, schedule.original_num_steps)
            x, x0 = step(x, model_fn(x, t).float(), i, index, t)
            if return_intermediates:
                intermediates.append(x0)
    return (x, intermediates) if return_intermediates else x


def _standard_normal(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """z ~ N(0, I) shaped like ``like``, drawn from ``generator`` (which must live on like's device)."""
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def ddpm_sample(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    noise: Tensor,
    *,
    parameterization: str = "eps",
    learn_variance: bool = False,
    x0_transform: Callable[[Tensor], Tensor] | None = None,
    cond_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    image_guidance: ImageGuidance | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    return_intermediates: bool = False,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """Ancestral sampling, Ho et al. 2020 ("DDPM") Algorithm 2, from x_T = ``noise``.

    x_{t−1} = μ_θ(x_t, t) + Σ_θ^{1/2} z with μ_θ, Σ_θ from :func:`p_mean_variance` (fixed β̃_t or the
    learned range of Nichol & Dhariwal 2021 eq. 15, over the respaced steps of their sec. 4); no noise
    at the last step. ``cond_fn`` shifts the mean by Σ·cond_fn(x_t, t) (Dhariwal & Nichol 2021,
    Algorithm 1). Returns x_0, or (x_0, [x̂_0 predicted at each of the N steps]) when
    ``return_intermediates``.
    """

    def step(x: Tensor, raw: Tensor, i: int, index: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        out = p_mean_variance(
            schedule, raw, x, index,
            parameterization=parameterization, learn_variance=learn_variance, x0_transform=x0_transform,
        )  # fmt: skip
        mean = out.mean if cond_fn is None else out.mean + out.variance * cond_fn(x, t).float()
        if i == 0:
            return mean, out.x0
        return mean + (0.5 * out.log_variance).exp() * _standard_normal(x, generator), out.x0

    return _sample_loop(
        step, model_fn, schedule, noise, image_guidance, progress, return_intermediates, "ddpm"
    )


def ddim_sample(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    noise: Tensor,
    *,
    eta: float = 0.0,
    parameterization: str = "eps",
    learn_variance: bool = False,
    x0_transform: Callable[[Tensor], Tensor] | None = None,
    cond_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    image_guidance: ImageGuidance | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    return_intermediates: bool = False,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """DDIM sampling, Song et al. 2021 eq. 12 with σ_t(η) of eq. 16, over the (respaced) schedule.

    x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1} − σ_t²) ε̂ + σ_t z,
    σ_t = η √((1 − ᾱ_{t−1})/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t−1}); η = 0 is deterministic, η = 1 is DDPM with
    β̃ variance. Learned-variance channels, if any, are ignored. ``cond_fn`` enters through the score:
    ε̂ ← ε̂ − √(1 − ᾱ_t)·cond_fn(x_t, t) (Dhariwal & Nichol 2021, Algorithm 2). Returns as
    :func:`ddpm_sample`.
    """

    def step(x: Tensor, raw: Tensor, i: int, index: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        out = p_mean_variance(
            schedule, raw, x, index,
            parameterization=parameterization, learn_variance=learn_variance, x0_transform=x0_transform,
        )  # fmt: skip
        x0, eps = out.x0, out.eps
        if cond_fn is not None:
            eps = eps - extract(schedule.sqrt_one_minus_alphas_cumprod, index, x) * cond_fn(x, t).float()
            x0 = x0_from_eps(schedule, x, index, eps)
        alpha = extract(schedule.alphas_cumprod, index, x)
        alpha_prev = extract(schedule.alphas_cumprod_prev, index, x)
        sigma = eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)).sqrt()
        x_prev = alpha_prev.sqrt() * x0 + (1 - alpha_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0 and i > 0:
            x_prev = x_prev + sigma * _standard_normal(x, generator)
        return x_prev, x0

    return _sample_loop(
        step, model_fn, schedule, noise, image_guidance, progress, return_intermediates, "ddim"
    )


ScoreFn = Callable[[Tensor, Tensor], Tensor]


def annealed_langevin(
    score_fn: ScoreFn,
    sigmas: Tensor,
    noise: Tensor,
    *,
    eps: float = 2e-5,
    steps_per_level: int = 100,
    final_denoise: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """Annealed Langevin dynamics, Song & Ermon 2019 ("NCSN") Algorithm 1, from x_0 = ``noise``.

    ``score_fn(x, sigma)`` returns s(x, σ) ≈ ∇_x log p_σ(x), with ``sigma`` a [B] tensor. For each level
    i (σ_1 > … > σ_L, ``sigmas``): α_i = ε·σ_i²/σ_L², then ``steps_per_level`` times
    x ← x + (α_i/2)·s(x, σ_i) + √α_i·z, z ~ N(0, I). With ``final_denoise`` the result is x + σ_L²·s(x, σ_L),
    the posterior mean of the clean data by Tweedie's formula (Jolicoeur-Martineau et al. 2021; NCSNv2
    sec. 4.3). ``callback(i, x)`` runs after each level (e.g. to record gradient norms). Runs in float32
    with autocast off; gradients stay off unless ``score_fn`` enables them (gradient guidance).
    """
    if steps_per_level <= 0 or eps <= 0:
        raise ValueError(f"steps_per_level and eps must be positive, got {steps_per_level} and {eps}")
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    x = noise.float()
    last = float(sigmas[-1])
    with torch.autocast(device_type=x.device.type, enabled=False), torch.no_grad():
        for i in tqdm(range(len(sigmas)), desc="langevin", disable=not progress):
            sigma = float(sigmas[i])
            alpha = eps * sigma**2 / last**2
            level = torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype)
            for _ in range(steps_per_level):
                x = x + 0.5 * alpha * score_fn(x, level).float() + math.sqrt(alpha) * _standard_normal(x, generator)
            if callback is not None:
                callback(i, x)
        if final_denoise:
            level = torch.full((x.shape[0],), last, device=x.device, dtype=x.dtype)
            x = x + last**2 * score_fn(x, level).float()
    return x


SAMPLERS = {"ddpm": ddpm_sample, "ddim": ddim_sample}
"""The one list of the diffusion samplers, all with the signature ``(model_fn, schedule, noise, *,
parameterization, learn_variance, x0_transform, image_guidance, generator, progress, **extra)``: the
stages draw with ``SAMPLERS[name]``; its keys are :data:`~t2i_lightning.diffusion.names.SAMPLER_NAMES`
(tested), every command's ``--sampler`` choices, so a new sampler is a function here and a name in
both. (The score model's annealed Langevin dynamics
works on noise levels, not a schedule: it is ``t2i sample --method score``.)"""


def draw_samples(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    parameterization: str,
    learn_variance: bool,
    sampler: str = "ddim",
    steps: int | str = 50,
    threshold: float | None = 0.995,
    eta: float = 0.0,
    image_guidance: ImageGuidance | None = None,
    offset: Tensor | None = None,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    bounded: bool = True,
) -> Tensor:
    """Run ``SAMPLERS[sampler]`` with ``model_fn(x_t, t)`` from Gaussian noise of ``shape`` (float32, from
    ``generator`` on ``device``) over ``schedule`` respaced to ``steps`` ("all": every training step; a
    number means ``ddim<steps>`` for DDIM, evenly spaced steps for DDPM), thresholding x̂_0 (dynamic at the
    ``threshold`` percentile, Saharia et al. 2022 sec. 2.3, or static clipping when None), and return the
    images clamped to [-1, 1].

    ``offset``, ``scale``: when the process runs on the scaled residual scale·(image − offset) (residual
    diffusion), the image offset + x̂_0/scale is what is thresholded and offset + sample/scale is returned.

    ``bounded``: whether the data live in [-1, 1] (pixels). Latents scaled to unit variance do not
    (Rombach et al. 2022): with ``bounded=False`` x̂_0 is neither thresholded nor clipped and the sample is
    returned as drawn; static or dynamic thresholding to [-1, 1] would cut a third of their values."""
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    if str(steps) != "all":
        schedule = schedule.respace(f"ddim{steps}" if sampler == "ddim" and str(steps).isdigit() else steps)
    noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    extra = {"eta": eta} if sampler == "ddim" else {}
    if not bounded:
        return SAMPLERS[sampler](
            model_fn, schedule, noise, parameterization=parameterization, learn_variance=learn_variance,
            x0_transform=None, image_guidance=image_guidance, generator=generator, progress=progress, **extra,
        )  # fmt: skip
    to_image = (lambda x0: dynamic_threshold(x0, threshold)) if threshold else static_threshold
    base = 0.0 if offset is None else offset.to(device, torch.float32)
    sample = SAMPLERS[sampler](
        model_fn, schedule, noise, parameterization=parameterization, learn_variance=learn_variance,
        x0_transform=to_image if offset is None else (lambda x0: scale * (to_image(base + x0 / scale) - base)),
        image_guidance=image_guidance, generator=generator, progress=progress, **extra,
    )  # fmt: skip
    return (base + sample / scale).clamp(-1, 1)
