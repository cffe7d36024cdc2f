"""The rows of the evaluation table: how each variant draws one image per reference caption.

Each variant names the checkpoints it needs; one that is missing makes the row "skipped" with the
reason instead of failing the table. The unCLIP-lite rows share one loaded chain (CLIP, translator,
decoder) and differ only in what conditions the decoder and how it samples (the study's ablations):

- ``real``: a second, disjoint real set of the same size (another split): the floor every number is
  read against; its CLIP score and alignment are against its own captions (the judge's ceiling).
- ``full``: caption → CLIP text embedding → translator → decoder.
- ``decoder_only``: the true CLIP image embedding of the reference image → decoder (the study's
  reconstruction row; PSNR/SSIM against the reference image).
- ``no_translator``: the CLIP text embedding straight into the decoder.
- ``full_256``: ``full`` then the upsampler, 256px; an upsampler conditioned on CLIP image embeddings
  (stages/paper/upsampler.yaml) is given the translated embeddings the decoder was given.
- ``ddpm``: ``full`` with ancestral DDPM over every training step instead of DDIM.
- ``cfg_<s>``: ``full`` at classifier-free guidance scale s (e.g. ``cfg_1``, ``cfg_8``).
- ``no_dynamic_threshold``: ``full`` with static clipping instead of dynamic thresholding.
- ``image_guided_<w>``: ``decoder_only`` with the reference image as the base image of image guidance
  at scale w (x_t ← x_t + w·(t/T)·(z − x_t), the study's form); against ``decoder_only`` it is image
  guidance on vs off, PSNR/SSIM against that base image.
- ``text_decoder``: the Imagen-like text-conditioned decoder.
- ``full_latent``, ``decoder_only_latent``, ``no_translator_latent``: ``full``, ``decoder_only`` and
  ``no_translator`` with the latent unCLIP decoder (``decoder_latent``: it diffuses the autoencoder's
  latents and decodes them) in place of the pixel one; same CLIP and translator.
- ``text_decoder_latent``: the text-conditioned latent decoder (the Stable-Diffusion-style route).
- ``autoencoder``: the latent route's autoencoder reconstructing each reference image from its latent
  (the posterior mean): the ceiling of every latent row (PSNR/SSIM against the reference image; what the
  judge reads of it beside what it reads of the originals, in the header).
- ``score_unguided``, ``score_guided_<λ>``: the score model by annealed Langevin dynamics, unguided or
  guided by the captioner at scale λ towards each caption (32px: the instruments resize).

Every model is loaded on the evaluation's device (:class:`EvalModels`); rows are drawn there from a
generator on that device, and come back to the CPU to be scored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..diffusion import DEFAULT_CFG_SCALE, ImageGuidance
from ..pipeline import (
    TextToImage,
    check_same_noise_levels,
    load_captioner,
    load_decoder,
    load_score_model,
    load_upsampler,
)
from ..registry import stage
from ..training.stage_loading import load_frozen_stage
from .reference import ReferenceSet, images_at_size


@dataclass
class SamplingOptions:
    """The decoder's sampling settings shared by the unCLIP-lite rows (a row may override one)."""

    sampler: str = "ddim"
    steps: int | str = 50
    cfg_scale: float = DEFAULT_CFG_SCALE
    threshold: float | None = 0.995
    batch_size: int = 50
    precision: str = "32-true"  # the U-Nets' (decoder, upsampler) while sampling: "32-true" or "bf16-mixed"

    def as_kwargs(self, **overrides) -> dict:
        kwargs = {"sampler": self.sampler, "steps": self.steps, "cfg_scale": self.cfg_scale, "threshold": self.threshold,
                  "precision": self.precision}  # fmt: skip
        return {**kwargs, **overrides}


@dataclass
class EvalModels:
    """Checkpoint paths (``clip``, ``translator``, ``decoder``, ``upsampler``, ``decoder_text``, ``score``,
    ``captioner``, ``decoder_latent``, ``decoder_text_latent``, ``autoencoder``), loaded on ``device`` on first use."""

    paths: dict[str, str | None]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _loaded: dict = field(default_factory=dict)

    def missing(self, needs: tuple[str, ...]) -> str | None:
        """Why a row needing ``needs`` cannot be drawn, or None."""
        for key in needs:
            path = self.paths.get(key)
            if not path:
                return f"no {key} checkpoint configured"
            if not os.path.isfile(path):
                return f"{key} checkpoint {path} not found (`make {stage(key).make_target}`)"
        return None

    def _get(self, name: str, load: Callable[[], object]):
        if name not in self._loaded:
            self._loaded[name] = load()
        return self._loaded[name]

    def chain(self, decoder: str = "decoder") -> TextToImage:
        """CLIP, translator and the unCLIP decoder of checkpoint key ``decoder`` (pixel or latent)."""
        paths = self.paths
        return self._get(f"chain:{decoder}", lambda: TextToImage.from_checkpoints(
            paths[decoder], paths["translator"], paths.get("clip"), device=self.device))  # fmt: skip

    @property
    def upsampler(self):
        return self._get("upsampler", lambda: load_upsampler(self.paths["upsampler"], self.device))

    @property
    def score(self):
        return self._get("score", lambda: load_score_model(self.paths["score"], self.device))

    @property
    def captioner(self):
        """The captioner, refused when its noise levels are not the score model's."""

        def load():
            captioner = load_captioner(self.paths["captioner"], self.device)
            check_same_noise_levels(self.score, captioner)
            return captioner

        return self._get("captioner", load)

    @property
    def autoencoder(self):
        return self._get("autoencoder", lambda: load_frozen_stage(self.paths["autoencoder"], "autoencoder", device=self.device))

    def text_decoder(self, decoder: str = "decoder_text"):
        """The text-conditioned decoder of checkpoint key ``decoder`` (pixel or latent)."""
        return self._get(decoder, lambda: load_decoder(self.paths[decoder], self.device))


Draw = Callable[[EvalModels, ReferenceSet, ReferenceSet | None, SamplingOptions, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Variant:
    name: str
    needs: tuple[str, ...]
    draw: Draw  # (models, reference, second real set or None, options, generator) -> N x 3 x S x S in [-1, 1]
    ground_truth: bool = False  # images correspond one to one to the reference images
    seeded: bool = True  # False: the same images whatever the seed (the real set)
    own_captions: bool = False  # True: the images have captions of their own (the real set), scored against those
    reference_embeddings: bool = False  # True: drawn from the reference images' CLIP embeddings (read with them)

    def captions(self, ref: ReferenceSet, real: ReferenceSet | None) -> list[str]:
        """The captions this row's images are scored against (CLIP score, exact alignment): the reference
        captions they were drawn for, or the real set's own."""
        return real.captions if self.own_captions else ref.captions


CHAIN = ("clip", "translator", "decoder")
LATENT_CHAIN = ("clip", "translator", "decoder_latent")


def _batched(fn: Callable[[slice], torch.Tensor], n: int, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(slice(i, min(i + batch_size, n))) for i in range(0, n, batch_size)])


def _chain_draw(
    models: EvalModels, ref: ReferenceSet, options: SamplingOptions, generator: torch.Generator, conditioning: str,
    image_guidance: float = 0.0, decoder: str = "decoder", **overrides,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Images from the loaded chain with the unCLIP decoder of checkpoint key ``decoder``, in batches,
    conditioned on the captions (through the translator), the true image embeddings or the raw text
    embeddings (``conditioning``), with sampling ``overrides``; ``image_guidance`` > 0 guides each image
    towards its reference image at that scale. Also returns the embeddings the decoder was given."""
    chain = models.chain(decoder)
    kwargs = options.as_kwargs(**overrides)
    images, conditions = [], []
    for start in range(0, len(ref), options.batch_size):
        rows = slice(start, min(start + options.batch_size, len(ref)))
        cond = chain.embedder(ref.captions[rows]) if conditioning == "caption" else getattr(ref, conditioning)[rows]
        guide = ImageGuidance(images_at_size(ref.images[rows], chain.decoder.image_size), image_guidance) \
            if image_guidance > 0 else None  # fmt: skip
        images.append(chain.decode(cond, generator=generator, progress=False, image_guidance=guide, **kwargs))
        conditions.append(cond)
    return torch.cat(images), torch.cat(conditions)


def _chain_rows(conditioning: str, image_guidance: float = 0.0, decoder: str = "decoder", **overrides) -> Draw:
    """A row drawing from the loaded chain (:func:`_chain_draw`)."""

    def draw(models, ref, real, options, generator):
        return _chain_draw(models, ref, options, generator, conditioning, image_guidance, decoder, **overrides)[0]

    return draw


def _full_256(models, ref, real, options, generator):
    """``full``, then the upsampler on its 64px images; an upsampler that takes CLIP image embeddings gets the
    translated ones the decoder was given (the others ignore them)."""
    low, embeddings = _chain_draw(models, ref, options, generator, "caption")
    # the upsampler draws in batches of equal pixels, cutting the per-image embeddings to each
    return models.upsampler.sample(low, image_embeddings=embeddings, generator=generator, progress=False,
                                   precision=options.precision)  # fmt: skip


def _text_rows(key: str) -> Draw:
    """A row drawing from the text-conditioned decoder of checkpoint key ``key``."""

    def draw(models, ref, real, options, generator):
        decoder = models.text_decoder(key)
        return _batched(
            lambda rows: decoder.sample(ref.captions[rows], generator=generator, progress=False, **options.as_kwargs()),
            len(ref), options.batch_size,
        )  # fmt: skip

    return draw


def _score_rows(guidance: float) -> Draw:
    """The score model, guided by the captioner at ``guidance`` towards each caption (0: unguided)."""

    def draw(models, ref, real, options, generator):
        score = models.score
        captioner = models.captioner.net if guidance > 0 else None
        return _batched(
            lambda rows: score.sample(rows.stop - rows.start, captioner=captioner, prompt=ref.captions[rows],
                                      guidance=guidance, generator=generator, progress=False),
            len(ref), options.batch_size,
        )  # fmt: skip

    return draw


def _autoencoder(models, ref, real, options, generator):
    autoencoder = models.autoencoder
    return _batched(lambda rows: autoencoder.reconstruct(ref.images[rows].to(autoencoder.device)).cpu(), len(ref),
                    options.batch_size)  # fmt: skip


def _real(models, ref, real, options, generator):
    return real.images


FIXED = {  # its keys are names.FIXED_VARIANTS (tested)
    "real": Variant("real", (), _real, seeded=False, own_captions=True),
    "full": Variant("full", CHAIN, _chain_rows("caption")),
    "decoder_only": Variant("decoder_only", CHAIN, _chain_rows("img_emb"), ground_truth=True, reference_embeddings=True),
    "no_translator": Variant("no_translator", CHAIN, _chain_rows("txt_emb"), reference_embeddings=True),
    "full_256": Variant("full_256", (*CHAIN, "upsampler"), _full_256),
    "ddpm": Variant("ddpm", CHAIN, _chain_rows("caption", sampler="ddpm", steps="all")),
    "no_dynamic_threshold": Variant("no_dynamic_threshold", CHAIN, _chain_rows("caption", threshold=None)),
    "text_decoder": Variant("text_decoder", ("decoder_text",), _text_rows("decoder_text")),
    "score_unguided": Variant("score_unguided", ("score",), _score_rows(0.0)),
    "full_latent": Variant("full_latent", LATENT_CHAIN, _chain_rows("caption", decoder="decoder_latent")),
    "decoder_only_latent": Variant("decoder_only_latent", LATENT_CHAIN, _chain_rows("img_emb", decoder="decoder_latent"),
                                   ground_truth=True, reference_embeddings=True),  # fmt: skip
    "no_translator_latent": Variant("no_translator_latent", LATENT_CHAIN, _chain_rows("txt_emb", decoder="decoder_latent"),
                                    reference_embeddings=True),  # fmt: skip
    "text_decoder_latent": Variant("text_decoder_latent", ("decoder_text_latent",), _text_rows("decoder_text_latent")),
    "autoencoder": Variant("autoencoder", ("autoencoder",), _autoencoder, ground_truth=True, seeded=False),
}
_CFG = re.compile(r"^cfg_(\d+(?:\.\d+)?)$")
_GUIDED = re.compile(r"^score_guided_(\d+(?:\.\d+)?)$")
_IMAGE_GUIDED = re.compile(r"^image_guided_(\d+(?:\.\d+)?)$")


def variant(name: str) -> Variant:
    """The variant called ``name`` (see the module docstring; ``cfg_<s>``, ``image_guided_<w>`` and
    ``score_guided_<λ>`` for any scale)."""
    if name in FIXED:
        return FIXED[name]
    match = _CFG.match(name)
    if match:
        return Variant(name, CHAIN, _chain_rows("caption", cfg_scale=float(match[1])))
    match = _GUIDED.match(name)
    if match:
        return Variant(name, ("score", "captioner"), _score_rows(float(match[1])))
    match = _IMAGE_GUIDED.match(name)
    if match:
        return Variant(name, CHAIN, _chain_rows("img_emb", image_guidance=float(match[1])), ground_truth=True,
                       reference_embeddings=True)  # fmt: skip
    raise ValueError(
        f"Unknown variant {name!r}; use {', '.join(FIXED)}, cfg_<scale>, image_guided_<scale> or score_guided_<lambda>"
    )
