"""Sampling the captioner-guided score model, as ``t2i sample --method score`` and ``t2i evaluate-guidance`` do.

    t2i sample --method score --prompt "a red circle" --guidance 3 --out red.png
    t2i evaluate-guidance --prompts "a red circle" "a blue square" --guidance 0 1 3 10 --n 16

Sampling is annealed Langevin dynamics with the score model's score plus λ·∇ log p(prompt | x_σ, σ)
from the frozen noise-conditioned captioner (Bayes' rule); ``--guidance 0`` is the unguided model.
The norms of both terms are printed per noise level, so λ can be tuned. Those commands import this
module in their ``run`` (it imports torch and the stages); their parsers' options are
:func:`t2i_lightning.commands.options.add_score_options`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..data.image_io import grid_image, save_png_atomic, tensor_to_images
from ..diffusion import GuidanceNorms
from ..nn.clip import warn_if_truncated
from ..pipeline import check_same_noise_levels, load_captioner, load_score_model
from ..stages.captioner import CaptionerStage
from ..stages.score import ScoreStage

if TYPE_CHECKING:
    from .evaluate_guidance import GuidanceReportOptions
    from .sample import SampleOptions

    ScoreSampling = SampleOptions | GuidanceReportOptions  # what a score-model draw reads


def check_score_args(options: ScoreSampling, guidances: list[float]) -> None:
    if any(g < 0 for g in guidances):
        raise ValueError("--guidance must be >= 0")
    if options.langevin_steps is not None and options.langevin_steps <= 0:
        raise ValueError(f"--langevin-steps must be positive, got {options.langevin_steps}")
    if options.langevin_eps is not None and options.langevin_eps <= 0:
        raise ValueError(f"--langevin-eps must be positive, got {options.langevin_eps}")


def load_score_pair(options: ScoreSampling, guided: bool) -> tuple[ScoreStage, CaptionerStage | None]:
    """The score model and, for guided sampling, the captioner, which must share its noise levels."""
    score = load_score_model(options.score, options.device)
    if not guided:
        return score, None
    captioner = load_captioner(options.captioner, options.device)
    check_same_noise_levels(score, captioner)
    return score, captioner


def warn_unknown_words(captioner: CaptionerStage | None, prompts: list[str]) -> None:
    """Say which prompt words the captioner cannot read (they count as one unknown token each), and
    which prompts are longer than its context (they are truncated)."""
    if captioner is None:
        return
    unknown = captioner.net.vocab.unknown_words(prompts)
    if unknown:
        print(f"warning: the captioner never saw {', '.join(unknown)}: guidance reads them as unknown tokens")
    warn_if_truncated(captioner.net.vocab.bpe, prompts)


def draw(score: ScoreStage, captioner: CaptionerStage | None, prompt: str, guidance: float, n: int,
         options: ScoreSampling, norms: GuidanceNorms | None = None, progress: bool = True) -> torch.Tensor:  # fmt: skip
    """``n`` samples for ``prompt`` at guidance ``guidance`` with the command line's Langevin settings."""
    return score.sample(
        n, captioner=captioner.net if captioner is not None and guidance > 0 else None, prompt=prompt,
        guidance=guidance, schedule=options.guidance_schedule, eps=options.langevin_eps, steps_per_level=options.langevin_steps,
        image_size=options.size, generator=torch.Generator(device=score.device).manual_seed(options.seed), progress=progress, norms=norms,
    )  # fmt: skip


def run_score_sample(options: SampleOptions) -> None:
    """``t2i sample --method score``: a grid of ``--n`` samples for each ``--prompt`` (a row each)."""
    if options.prompt is None:
        raise ValueError("--method score takes --prompt (with --guidance > 0 the captioner steers towards it)")
    check_score_args(options, [options.guidance])
    score, captioner = load_score_pair(options, options.guidance > 0)
    warn_unknown_words(captioner, options.prompt)
    rows = []
    for prompt in options.prompt:
        norms = GuidanceNorms({}, {})
        rows.append(draw(score, captioner, prompt, options.guidance, options.n, options, norms))
        if options.guidance > 0:
            print(f"{prompt!r}:\n{'sigma':>8} {'|score|':>10} {'|guidance|':>11}   (mean per-sample L2 norms, lambda={options.guidance})")
            for row in norms.summary():
                print(f"{row['sigma']:>8.4f} {row['score_norm']:>10.4g} {row['guidance_norm']:>11.4g}")
    images = torch.cat(rows)
    columns = options.n if len(rows) > 1 else min(len(images), 8)
    path = save_png_atomic(grid_image(tensor_to_images(images), columns), options.out)
    how = f"guided by the captioner (lambda {options.guidance})" if options.guidance > 0 else "unguided"
    print(f"{len(images)} images of {images.shape[-1]}x{images.shape[-1]}, {how} -> {path}")
