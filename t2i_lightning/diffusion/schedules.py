"""Noise schedules: β_t arrays, the derived quantities every diffusion formula needs, and respacing.

All schedule arrays are float64 (one sequence of products over 1000 steps loses digits in float32);
:func:`extract` casts the gathered values to the dtype and device of the tensor they multiply.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor


def linear_betas(T: int, start: float = 1e-4, end: float = 0.02) -> Tensor:
    """Linear β schedule of Ho et al. 2020 ("DDPM", sec. 4: β_1 = 1e-4 … β_T = 0.02 for T = 1000).

    For other T the endpoints are scaled by 1000/T so that the total noise stays about the same
    (the convention of Nichol & Dhariwal 2021's reference setup). Returns float64 [T].
    """
    scale = 1000.0 / T
    return torch.linspace(start * scale, end * scale, T, dtype=torch.float64)


def cosine_alpha_bar(u: Tensor, s: float = 0.008) -> Tensor:
    """ᾱ(u) = f(u)/f(0), f(u) = cos²((u + s)/(1 + s) · π/2), for continuous time u ∈ [0, 1]
    (Nichol & Dhariwal 2021, "Improved DDPM", eq. 17 with u = t/T). ᾱ(0) = 1 exactly."""
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return f / math.cos(s / (1 + s) * math.pi / 2) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule of Nichol & Dhariwal 2021 ("Improved DDPM", eq. 17).

    ᾱ_t = :func:`cosine_alpha_bar` (t/T), β_t = 1 − ᾱ_t/ᾱ_{t−1}, clipped to ``max_beta`` to avoid the
    singularity at t = T. Entry i of the result is β_{i+1}. Returns float64 [T].
    """
    alphas_cumprod = cosine_alpha_bar(torch.arange(T + 1, dtype=torch.float64) / T, s)
    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=max_beta)


def shift_alpha_bar(alphas_cumprod: Tensor, shift: float) -> Tensor:
    """ᾱ with its log-SNR moved down by 2·log(shift): logSNR'(t) = logSNR(t) − 2 log(shift), i.e.
    ᾱ' = sigmoid(logit(ᾱ) − 2 log shift) (Hoogeboom, Heek & Salimans 2023, "simple diffusion", sec. 3.1,
    where shift = d/64 for a d-pixel image against the 64-pixel base). ``shift`` > 1 adds noise at every
    step, so more of the schedule lies where the noise hides the large, redundant structures (an
    image's layout) that the unshifted schedule only destroys in its last few percent."""
    if shift <= 0:
        raise ValueError(f"schedule shift must be > 0, got {shift}")
    return torch.sigmoid(torch.logit(alphas_cumprod) - 2 * math.log(shift))


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> Tensor:
    """Noise levels σ_1 > … > σ_L of a noise-conditional score network, a geometric sequence from
    ``sigma_max`` to ``sigma_min`` (Song & Ermon 2019, "NCSN", sec. 4.2). Returns float64 [L].

    The study used σ from 1 to 0.01 with L = 10 for data in [0, 1]; for data in [−1, 1], twice the
    range, the same noise-to-signal ratios are σ from 2 to 0.02.
    """
    if not (sigma_max > sigma_min > 0 and num_levels >= 2):
        raise ValueError(f"need sigma_max > sigma_min > 0 and at least 2 levels, got {sigma_max}, {sigma_min}, {num_levels}")
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), num_levels, dtype=torch.float64)


_COPIES: dict[int, tuple[weakref.ref, dict]] = {}
"""id(array) -> (a weak reference to it, its copies by (dtype, device)); an entry goes when its array does."""


def device_copy(arr: Tensor, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """``arr`` in ``dtype`` on ``device``, converted once and kept while ``arr`` lives (a schedule's arrays
    are read at every training and sampling step; copying them to an accelerator each time is a host sync)."""
    if arr.dtype == dtype and arr.device == torch.device(device):
        return arr  # nothing to convert (and a copy that is arr itself would keep it alive)
    entry = _COPIES.get(id(arr))
    if entry is None or entry[0]() is not arr:
        key = id(arr)
        entry = _COPIES[key] = (weakref.ref(arr, lambda _, key=key: _COPIES.pop(key, None)), {})
    copies, wanted = entry[1], (dtype, torch.device(device))
    if wanted not in copies:
        copies[wanted] = arr.to(device=wanted[1], dtype=dtype)
    return copies[wanted]


def extract(arr: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """Gather ``arr[t]`` for a batch of step indices and shape it [B, 1, …] to broadcast against ``like``.

    The helper behind every per-timestep coefficient in Ho et al. 2020 ("DDPM") eqs. 4–12. The array is
    cast to ``like``'s dtype on its device once (:func:`device_copy`) and gathered there, so no host
    synchronisation is needed when ``t`` lives on an accelerator.
    """
    out = device_copy(arr, like.dtype, like.device)[t.to(like.device)]
    return out.reshape(t.shape[0], *([1] * (like.ndim - 1)))


def _even_indices(start: int, size: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``[start, start + size)``, first and last included."""
    stride = (size - 1) / (count - 1) if count > 1 else 1.0
    return [start + round(i * stride) for i in range(count)]


def _section_indices(num_steps: int, counts: Sequence[int]) -> list[int]:
    """Nichol & Dhariwal 2021 sec. 4 spacing: split [0, T) into equal sections, stride evenly in each."""
    size, extra = divmod(num_steps, len(counts))
    indices, start = [], 0
    for i, count in enumerate(counts):
        section = size + (1 if i < extra else 0)
        if not 1 <= count <= section:
            raise ValueError(
                f"respace: section {i} has {section} steps, cannot take {count} (need 1..{section})"
            )
        indices += _even_indices(start, section, count)
        start += section
    return indices


def _ddim_indices(num_steps: int, count: int) -> list[int]:
    """Song et al. 2021 ("DDIM") uniform skip: ``range(0, T, stride)``, the stride chosen so there are
    exactly ``count`` steps."""
    for stride in range(1, num_steps + 1):
        if len(range(0, num_steps, stride)) == count:
            return list(range(0, num_steps, stride))
    raise ValueError(f"respace: no integer stride gives exactly {count} DDIM steps out of {num_steps}")


def _parse_count(text: str, spec: object) -> int:
    """One integer of a respacing spec, with an error that names the whole spec."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"respace: cannot parse {spec!r}; expected 'N', 'ddimN', 'N1,N2,...' or a list of ints"
        ) from None


def _parse_spec(spec: str | int | Sequence[int], num_steps: int) -> list[int]:
    """Turn a respacing spec into the sorted list of kept step indices (validated)."""
    if isinstance(spec, int):
        spec = str(spec)
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("ddim"):
            count = _parse_count(text[len("ddim") :], spec)
            if not 1 <= count <= num_steps:
                raise ValueError(f"respace: {spec!r} asks for {count} steps, need 1..{num_steps}")
            return _ddim_indices(num_steps, count)
        return _section_indices(num_steps, [_parse_count(part, spec) for part in text.split(",")])
    indices = [int(i) for i in spec]
    if not indices:
        raise ValueError("respace: the explicit list of steps is empty")
    if any(not 0 <= i < num_steps for i in indices):
        raise ValueError(f"respace: steps {indices} fall outside [0, {num_steps})")
    if len(set(indices)) != len(indices):
        raise ValueError(f"respace: steps {indices} contain duplicates")
    return sorted(indices)


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete diffusion process given by its β_t (Ho et al. 2020, "DDPM", eqs. 2–7).

    Fields:
        betas: float64 [N], the β of each step of this (possibly respaced) process.
        timesteps: int64 [N], the original training step index each step corresponds to
            (``arange(N)`` when not respaced; what the network is given as t).
        original_num_steps: the length T of the schedule the network was trained with.

    Derived arrays (float64 [N], computed once on first use) follow DDPM notation; index i is step i.
    """

    betas: Tensor
    timesteps: Tensor | None = None
    original_num_steps: int | None = None

    def __post_init__(self):
        betas = torch.as_tensor(self.betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must lie in (0, 1]")
        timesteps = torch.arange(len(betas)) if self.timesteps is None else self.timesteps
        timesteps = torch.as_tensor(timesteps, dtype=torch.int64)
        original = len(betas) if self.original_num_steps is None else int(self.original_num_steps)
        if timesteps.shape != betas.shape:
            raise ValueError(f"timesteps shape {tuple(timesteps.shape)} != betas shape {tuple(betas.shape)}")
        if len(timesteps) > 1 and not bool((timesteps[1:] > timesteps[:-1]).all()):
            raise ValueError("timesteps must be strictly increasing")
        if int(timesteps[0]) < 0 or int(timesteps[-1]) >= original:
            raise ValueError(f"timesteps must lie in [0, {original})")
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "timesteps", timesteps)
        object.__setattr__(self, "original_num_steps", original)

    @classmethod
    def from_name(cls, name: str, T: int = 1000, shift: float = 1.0, max_beta: float = 0.999) -> NoiseSchedule:
        """The linear schedule of Ho et al. 2020 or the cosine schedule of Nichol & Dhariwal 2021 (eq. 17),
        its log-SNR shifted by −2·log(``shift``) (:func:`shift_alpha_bar`; 1 leaves it unchanged) with the
        shifted β_t = 1 − ᾱ'_t/ᾱ'_{t−1} clipped to ``max_beta`` as the cosine's are."""
        makers = {"linear": linear_betas, "cosine": cosine_betas}
        if name not in makers:
            raise ValueError(f"unknown noise schedule {name!r}; valid names: {sorted(makers)}")
        betas = makers[name](T)
        if shift == 1.0:
            return cls(betas)
        shifted = shift_alpha_bar(torch.cumprod(1 - betas, 0), shift)
        previous = torch.cat([shifted.new_ones(1), shifted[:-1]])
        return cls((1 - shifted / previous).clamp(max=max_beta))

    def respace(self, spec: str | int | Sequence[int]) -> NoiseSchedule:
        """Keep a subset of steps, as in Nichol & Dhariwal 2021 ("Improved DDPM", sec. 4).

        ``spec``: ``"50"`` (or ``50``) evenly strided with first and last step kept; ``"ddim50"`` the
        uniform ``range(0, T, stride)`` of Song et al. 2021 with exactly 50 steps; ``"10,10,5"`` equal
        sections of the schedule each strided evenly; or an explicit sequence of step indices.
        The new betas are β'_i = 1 − ᾱ_{k_i}/ᾱ_{k_{i−1}} (ᾱ_{k_{−1}} = 1), so the new ᾱ equal the old ones
        at the kept steps. Respacing a respaced schedule composes: indices refer to this schedule's steps
        and ``timesteps`` of the result still name original training steps.
        """
        kept = torch.tensor(_parse_spec(spec, self.num_steps), dtype=torch.int64)
        alphas_cumprod = self.alphas_cumprod[kept]
        previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        return NoiseSchedule(1 - alphas_cumprod / previous, self.timesteps[kept], self.original_num_steps)

    @property
    def num_steps(self) -> int:
        """Number of steps N of this process."""
        return len(self.betas)

    @cached_property
    def alphas(self) -> Tensor:
        """α_t = 1 − β_t."""
        return 1 - self.betas

    @cached_property
    def log_betas(self) -> Tensor:
        """log β_t (upper end of the learned variance range)."""
        return self.betas.log()

    @cached_property
    def alphas_cumprod(self) -> Tensor:
        """ᾱ_t = Π_{s≤t} α_s (DDPM eq. 4)."""
        return torch.cumprod(self.alphas, dim=0)

    @cached_property
    def alphas_cumprod_prev(self) -> Tensor:
        """ᾱ_{t−1}, with ᾱ_{−1} = 1."""
        return torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])

    @cached_property
    def sqrt_alphas_cumprod(self) -> Tensor:
        """√ᾱ_t."""
        return self.alphas_cumprod.sqrt()

    @cached_property
    def sqrt_one_minus_alphas_cumprod(self) -> Tensor:
        """√(1 − ᾱ_t)."""
        return (1 - self.alphas_cumprod).sqrt()

    @cached_property
    def posterior_variance(self) -> Tensor:
        """β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t (DDPM eq. 7); zero at t = 0."""
        return self.betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)

    @cached_property
    def posterior_log_variance_clipped(self) -> Tensor:
        """log β̃_t with the t = 0 entry (log 0) replaced by log β̃_1, as in Improved DDPM.

        A one-step schedule has no β̃_1; there the entry is log β_0.
        """
        first = self.posterior_variance[1:2] if self.num_steps > 1 else self.betas[:1]
        return torch.cat([first, self.posterior_variance[1:]]).log()

    @cached_property
    def posterior_mean_coef1(self) -> Tensor:
        """Coefficient of x_0 in μ̃_t(x_t, x_0) (DDPM eq. 7): √ᾱ_{t−1} β_t/(1 − ᾱ_t)."""
        return self.betas * self.alphas_cumprod_prev.sqrt() / (1 - self.alphas_cumprod)

    @cached_property
    def posterior_mean_coef2(self) -> Tensor:
        """Coefficient of x_t in μ̃_t(x_t, x_0) (DDPM eq. 7): √α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t)."""
        return self.alphas.sqrt() * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)

    @cached_property
    def snr(self) -> Tensor:
        """Signal-to-noise ratio ᾱ_t/(1 − ᾱ_t) (Choi et al. 2022, "P2 weighting", sec. 3)."""
        return self.alphas_cumprod / (1 - self.alphas_cumprod)
