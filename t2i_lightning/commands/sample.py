"""``t2i sample``: captions, images or embedding arithmetic -> a PNG grid of decoder samples.

    t2i sample --prompt "a red circle" --n 8 --sampler ddim --steps 50 --cfg 3 --out red.png
    t2i sample --prompt "a red circle" "two blue squares" --n 4 --out rows.png  # one row per caption
    t2i sample --from-image photo.png --n 4 --out recon.png          # the study's reconstructions
    t2i sample --mix "a red circle" "a blue square" --out mix.png      # average of two embeddings
    t2i sample --analogy A B C --out analogy.png                      # emb(A) - emb(B) + emb(C)
    t2i sample --interpolate A B --frames 5 --out strip.png           # a strip from A to B

``--method score --prompt TEXT --guidance LAMBDA`` samples the captioner-guided score model instead
(:mod:`t2i_lightning.commands.score`).

When an upsampler checkpoint exists (``runs/upsampler/`` by default, or ``--upsampler``), the
decoder's 64px images go through it (256px out); ``--no-upsample`` stops at 64px.

Embedding arithmetic (the study's sec. 5.2) acts on translated CLIP image embeddings, the
decoder's input. A text-conditioned (Imagen-like) ``--decoder`` takes the caption itself: no
translator or CLIP image embedding, so only ``--prompt`` applies. The grid has no borders: tile i
of an n-image grid is image i. With several prompts (all models loaded once) the grid has one row of
``--n`` images per prompt, each row the images that prompt alone would give with the same seed.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..registry import default_checkpoint, make_command
from .options import (
    add_cfg_argument,
    add_device_arguments,
    add_sampler_argument,
    add_score_options,
    non_negative_float,
    options_from,
)
from .upsample import add_upsampler_options, check_upsampler_args

if TYPE_CHECKING:
    import torch

    from ..pipeline import DirectTextToImage, TextToImage
    from ..stages.diffusion import DiffusionStage


@dataclass(frozen=True, kw_only=True)
class SampleOptions:
    prompt: list[str] | None
    from_image: str | None
    mix: list[str] | None
    analogy: list[str] | None
    interpolate: list[str] | None
    method: str
    guidance: float
    n: int
    frames: int
    sampler: str
    steps: str
    eta: float
    cfg: float
    threshold: float
    device: torch.device
    precision: str
    image_guidance: str | None
    ig_scale: float
    seed: int
    size: int | None
    decoder: str
    translator: str
    clip: str | None
    upsampler: str | None
    up_sampler: str | None
    up_steps: int | None
    aug_level: float | None
    score: str
    captioner: str
    guidance_schedule: str
    langevin_steps: int | None
    langevin_eps: float | None
    no_upsample: bool
    out: str


if TYPE_CHECKING:
    from .evaluate_decoder import DecoderReportOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    sample = subparsers.add_parser(
        "sample",
        help="draw images from captions through CLIP, the translator and the decoder (or a text decoder alone)",
        description=__doc__.split("\n\n")[0],
    )
    what = sample.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", nargs="+", help="one or more captions; --n images are drawn for each (a row each)")
    what.add_argument("--from-image", metavar="PATH", help="decode the CLIP image embedding of an image")
    what.add_argument("--mix", nargs=2, metavar=("A", "B"), help="the average of two captions' embeddings")
    what.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"), help="emb(A) - emb(B) + emb(C)")
    what.add_argument("--interpolate", nargs=2, metavar=("A", "B"), help="a strip of --frames images from A to B")
    sample.add_argument(
        "--method", choices=("unclip", "score"), default="unclip",
        help="unclip: translator + decoder (+ upsampler); score: the captioner-guided score model (default: unclip)",
    )  # fmt: skip
    sample.add_argument("--guidance", type=float, default=1.0, help="--method score: captioner guidance lambda (default: 1)")
    sample.add_argument("--n", type=int, default=8, help="images per embedding (default: 8)")
    sample.add_argument("--frames", type=int, default=5, help="frames of --interpolate (default: 5)")
    add_sampler_argument(sample)
    sample.add_argument("--steps", default="50", help="sampling steps, or 'all' (default: 50)")
    sample.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default: 0)")
    add_cfg_argument(sample)
    sample.add_argument(
        "--threshold", type=float, default=0.995,
        help="dynamic-thresholding percentile; 0 for static clipping (default: 0.995)",
    )  # fmt: skip
    add_device_arguments(sample)
    sample.add_argument("--image-guidance", metavar="PATH", help="base image pulled towards (image guidance)")
    sample.add_argument("--ig-scale", type=non_negative_float, default=0.005, help="image-guidance scale w (default: 0.005)")
    sample.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    sample.add_argument("--size", type=int, default=None, help="image side (default: the decoder's)")
    sample.add_argument(
        "--decoder", default=default_checkpoint("decoder_latent"),
        help="decoder checkpoint: the unCLIP decoder in pixels or latents, or a text-conditioned one (default: %(default)s, "
        "the demo's main route)",
    )  # fmt: skip
    sample.add_argument(
        "--translator", default=default_checkpoint("translator"),
        help="translator checkpoint (default: %(default)s; unused with a text-conditioned decoder)",
    )  # fmt: skip
    sample.add_argument("--clip", default=None, help="CLIP weights (default: the one the translator recorded)")
    add_upsampler_options(sample, ", used when it exists")
    add_score_options(sample)
    sample.add_argument("--no-upsample", action="store_true", help="stop at the decoder's 64px images")
    sample.add_argument("--out", required=True, help="output PNG (a borderless grid)")
    sample.set_defaults(run=lambda args: run(options_from(SampleOptions, args)))


def check_sample_args(options: SampleOptions) -> None:
    """User errors before any model is loaded; the output's directory is created (and must be writable)."""
    from ..data.shards import check_writable
    from ..nn.text_encoder import check_captions

    if options.n <= 0:
        raise ValueError(f"--n must be positive, got {options.n}")
    if options.size is not None and options.size <= 0:
        raise ValueError(f"--size must be positive, got {options.size}")
    if options.interpolate and options.frames < 2:
        raise ValueError(f"--frames must be at least 2, got {options.frames}")
    check_steps_and_threshold(options)
    texts = options.prompt or options.mix or options.analogy or options.interpolate or []
    if texts:
        check_captions(texts)
    check_upsampler_args(options)
    if options.no_upsample and options.upsampler:
        raise ValueError("--no-upsample and --upsampler contradict each other")
    check_writable(options.out)


def check_steps_and_threshold(options: SampleOptions | DecoderReportOptions) -> None:
    """``--steps`` (a positive integer or 'all') and ``--threshold`` (a percentile, or 0 for static clipping)."""
    if not 0 <= options.threshold < 1:
        raise ValueError(f"--threshold is a percentile in (0, 1), or 0 for static clipping; got {options.threshold}")
    if options.steps != "all" and not (options.steps.isdigit() and int(options.steps) > 0):
        raise ValueError(f"--steps must be a positive integer or 'all', got {options.steps!r}")


def check_decoder_args(options: SampleOptions) -> None:
    """Options the decoder cannot take, before any model is loaded: a text-conditioned decoder has
    no CLIP image embedding to reconstruct from or to do arithmetic on."""
    from ..pipeline import is_text_decoder

    if options.prompt is None and is_text_decoder(options.decoder):
        raise ValueError(
            f"{options.decoder} is a text-conditioned decoder: it takes --prompt only (--from-image, --mix, --analogy "
            "and --interpolate act on CLIP image embeddings, which it does not use)"
        )


def check_image_files(options: SampleOptions) -> None:
    """The images named by --from-image and --image-guidance exist, before any model is loaded."""
    for option, path in (("--from-image", options.from_image), ("--image-guidance", options.image_guidance)):
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"Image not found: {path} ({option})")


def chain_upsampler(options: SampleOptions, chain: TextToImage | DirectTextToImage) -> DiffusionStage | None:
    """The upsampler after the decoder: ``--upsampler``, else the default checkpoint when it exists
    (a note says when it does not), None with ``--no-upsample``. One conditioned on CLIP image
    embeddings must share the decoder's CLIP; a text-conditioned decoder has no embeddings to give it."""
    from ..pipeline import DEFAULT_UPSAMPLER, load_upsampler

    if options.no_upsample:
        return None
    if options.upsampler is None and not os.path.isfile(DEFAULT_UPSAMPLER):
        print(f"No upsampler at {DEFAULT_UPSAMPLER} ({make_command('upsampler')}): the images stay at the decoder's size")
        return None
    upsampler = load_upsampler(options.upsampler or DEFAULT_UPSAMPLER, options.device)
    if upsampler.conditions_on_embedding:
        if chain.conditions_on_text:
            raise ValueError("This upsampler is conditioned on CLIP image embeddings, which a text-conditioned decoder does not make")
        ours, theirs = upsampler.clip_identity.get("clip_id"), chain.decoder.clip_identity.get("clip_id")
        if ours and theirs and ours != theirs:
            raise ValueError(f"The upsampler was trained on {ours} embeddings but the decoder on {theirs}")
    return upsampler


def target_embeddings(chain: TextToImage, options: SampleOptions) -> torch.Tensor:
    """The raw CLIP image embeddings to decode, one row per image of the grid (not for --prompt)."""
    import torch

    embed = chain.embedder
    if options.from_image:
        return chain.embed_image_file(options.from_image).expand(options.n, -1)
    if options.mix:
        return embed(options.mix).mean(0, keepdim=True).expand(options.n, -1)
    if options.analogy:
        a, b, c = embed(options.analogy)
        return (a - b + c)[None].expand(options.n, -1)
    a, b = embed(options.interpolate)
    weights = torch.linspace(0, 1, options.frames, device=a.device)[:, None]
    return (1 - weights) * a + weights * b


def run(options: SampleOptions) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from ..data.image_io import grid_image, open_image, save_png_atomic, tensor_to_images, to_rgb
    from ..diffusion import ImageGuidance
    from ..pipeline import load_chain
    from .score import run_score_sample
    from .upsample import upsample_tensor

    check_sample_args(options)
    if options.method == "score":
        run_score_sample(options)
        return
    check_decoder_args(options)
    check_image_files(options)
    chain = load_chain(options.decoder, options.translator, options.clip, options.device)
    guidance = None
    if options.image_guidance:
        size = options.size or chain.decoder.image_size
        base = to_rgb(open_image(options.image_guidance)).resize((size, size), Image.Resampling.LANCZOS)
        pixels = torch.from_numpy(np.asarray(base, dtype=np.float32)).permute(2, 0, 1)
        guidance = ImageGuidance(image=(pixels[None] / 127.5 - 1.0).to(options.device), scale=options.ig_scale)
    upsampler = chain_upsampler(options, chain)

    def draw(conditioning: torch.Tensor | list[str]) -> torch.Tensor:
        images = chain.decode(
            conditioning, image_size=options.size, sampler=options.sampler, steps=options.steps, eta=options.eta,
            cfg_scale=options.cfg, threshold=options.threshold or None, image_guidance=guidance,
            generator=torch.Generator(device=options.device).manual_seed(options.seed), precision=options.precision,
        )  # fmt: skip
        if upsampler is None:
            return images
        return upsample_tensor(upsampler, images, options, None if chain.conditions_on_text else conditioning)

    if options.prompt is None:
        images = draw(target_embeddings(chain, options))
    else:  # one row per prompt, each drawn as that prompt alone would be
        embed = (lambda p: [p] * options.n) if chain.conditions_on_text else (lambda p: chain.embedder([p]).expand(options.n, -1))
        images = torch.cat([draw(embed(prompt)) for prompt in options.prompt])
    several = options.prompt is not None and len(options.prompt) > 1
    columns = len(images) if options.interpolate else options.n if several else min(len(images), 8)
    path = save_png_atomic(grid_image(tensor_to_images(images), columns), options.out)
    side = images.shape[-1]
    print(f"{len(images)} images of {side}x{side} ({columns} per row) -> {path}")
