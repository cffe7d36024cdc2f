"""``t2i sample``: captions, images or embedding arithmetic -> a PNG grid of decoder samples.

    t2i sample --prompt "a red circle" --n 8 --sampler ddim --steps 50 --cfg 3 --out red.png
    t2i sample --from-image photo.png --n 4 --out recon.png          # the study's reconstructions
    t2i sample --mix "a red circle" "a blue square" --out mix.png      # average of two embeddings
    t2i sample --analogy A B C --out analogy.png                      # emb(A) - emb(B) + emb(C)
    t2i sample --interpolate A B --frames 5 --out strip.png           # a strip from A to B

``--method score --prompt TEXT --guidance LAMBDA`` samples the captioner-guided score model instead
(:mod:`t2i_lightning.score_command`).

When an upsampler checkpoint exists (``runs/upsampler/`` by default, or ``--upsampler``), the
decoder's 64px images go through it (256px out); ``--no-upsample`` stops at 64px.

Embedding arithmetic (the study's sec. 5.2) acts on translated CLIP image embeddings, the
decoder's input. A text-conditioned (Imagen-like) ``--decoder`` takes the caption itself: no
translator or CLIP image embedding, so only ``--prompt`` applies. The grid has no borders: tile i
of an n-image grid is image i.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from PIL import Image

from .data.image_io import grid_image, open_image, save_png_atomic, tensor_to_images, to_rgb
from .data.shards import check_writable
from .diffusion import ImageGuidance
from .nn.text_encoder import check_captions
from .pipeline import (
    DEFAULT_DECODER,
    DEFAULT_TRANSLATOR,
    DEFAULT_UPSAMPLER,
    DirectTextToImage,
    TextToImage,
    is_text_decoder,
    load_chain,
    load_upsampler,
)
from .precision_option import add_precision_argument
from .score_command import add_score_options, run_score_sample
from .stages.upsampler import UpsamplerStage
from .upsample_command import add_upsampler_options, check_upsampler_args, upsample_tensor


def add_sample_parser(subparsers: argparse._SubParsersAction) -> None:
    sample = subparsers.add_parser(
        "sample",
        help="draw images from captions through CLIP, the translator and the decoder (or a text decoder alone)",
        description=__doc__.split("\n\n")[0],
    )
    what = sample.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="a caption; --n images are drawn for it")
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
    sample.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim", help="default: ddim")
    sample.add_argument("--steps", default="50", help="sampling steps, or 'all' (default: 50)")
    sample.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default: 0)")
    sample.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale (default: 3)")
    sample.add_argument(
        "--threshold", type=float, default=0.995,
        help="dynamic-thresholding percentile; 0 for static clipping (default: 0.995)",
    )  # fmt: skip
    add_precision_argument(sample)
    sample.add_argument("--image-guidance", metavar="PATH", help="base image pulled towards (image guidance)")
    sample.add_argument("--ig-scale", type=float, default=0.005, help="image-guidance scale w (default: 0.005)")
    sample.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    sample.add_argument("--size", type=int, default=None, help="image side (default: the decoder's)")
    sample.add_argument("--decoder", default=DEFAULT_DECODER, help=f"decoder checkpoint (default: {DEFAULT_DECODER})")
    sample.add_argument(
        "--translator", default=DEFAULT_TRANSLATOR,
        help=f"translator checkpoint (default: {DEFAULT_TRANSLATOR}; unused with a text-conditioned decoder)",
    )  # fmt: skip
    sample.add_argument("--clip", default=None, help="CLIP weights (default: the one the translator recorded)")
    add_upsampler_options(sample, ", used when it exists")
    add_score_options(sample)
    sample.add_argument("--no-upsample", action="store_true", help="stop at the decoder's 64px images")
    sample.add_argument("--out", required=True, help="output PNG (a borderless grid)")


def check_sample_args(args: argparse.Namespace) -> None:
    """User errors before any model is loaded; the output's directory is created (and must be writable)."""
    if args.n <= 0:
        raise ValueError(f"--n must be positive, got {args.n}")
    if args.size is not None and args.size <= 0:
        raise ValueError(f"--size must be positive, got {args.size}")
    if args.interpolate and args.frames < 2:
        raise ValueError(f"--frames must be at least 2, got {args.frames}")
    if args.cfg < 0 or args.ig_scale < 0:
        raise ValueError("--cfg and --ig-scale must be >= 0")
    check_steps_and_threshold(args)
    texts = [args.prompt] if args.prompt is not None else (args.mix or args.analogy or args.interpolate or [])
    if texts:
        check_captions(texts)
    check_upsampler_args(args)
    if args.no_upsample and args.upsampler:
        raise ValueError("--no-upsample and --upsampler contradict each other")
    check_writable(args.out)


def check_steps_and_threshold(args: argparse.Namespace) -> None:
    """``--steps`` (a positive integer or 'all') and ``--threshold`` (a percentile, or 0 for static clipping)."""
    if not 0 <= args.threshold < 1:
        raise ValueError(f"--threshold is a percentile in (0, 1), or 0 for static clipping; got {args.threshold}")
    if args.steps != "all" and not (args.steps.isdigit() and int(args.steps) > 0):
        raise ValueError(f"--steps must be a positive integer or 'all', got {args.steps!r}")


def check_decoder_args(args: argparse.Namespace) -> None:
    """Options the decoder cannot take, before any model is loaded: a text-conditioned decoder has
    no CLIP image embedding to reconstruct from or to do arithmetic on."""
    if args.prompt is None and is_text_decoder(args.decoder):
        raise ValueError(
            f"{args.decoder} is a text-conditioned decoder: it takes --prompt only (--from-image, --mix, --analogy "
            "and --interpolate act on CLIP image embeddings, which it does not use)"
        )


def check_image_files(args: argparse.Namespace) -> None:
    """The images named by --from-image and --image-guidance exist, before any model is loaded."""
    for option, path in (("--from-image", args.from_image), ("--image-guidance", args.image_guidance)):
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"Image not found: {path} ({option})")


def chain_upsampler(args: argparse.Namespace, chain: TextToImage | DirectTextToImage) -> UpsamplerStage | None:
    """The upsampler after the decoder: ``--upsampler``, else the default checkpoint when it exists
    (a note says when it does not), None with ``--no-upsample``. One conditioned on CLIP image
    embeddings must share the decoder's CLIP; a text-conditioned decoder has no embeddings to give it."""
    if args.no_upsample:
        return None
    if args.upsampler is None and not os.path.isfile(DEFAULT_UPSAMPLER):
        print(f"No upsampler at {DEFAULT_UPSAMPLER} (`make train-upsampler`): the images stay at the decoder's size")
        return None
    upsampler = load_upsampler(args.upsampler or DEFAULT_UPSAMPLER)
    if upsampler.conditions_on_embedding:
        if chain.conditions_on_text:
            raise ValueError("This upsampler is conditioned on CLIP image embeddings, which a text-conditioned decoder does not make")
        ours, theirs = upsampler.clip_identity.get("clip_id"), chain.decoder.clip_identity.get("clip_id")
        if ours and theirs and ours != theirs:
            raise ValueError(f"The upsampler was trained on {ours} embeddings but the decoder on {theirs}")
    return upsampler


def target_embeddings(chain: TextToImage, args: argparse.Namespace) -> torch.Tensor:
    """The raw CLIP image embeddings to decode, one row per image of the grid."""
    embed = chain.embedder
    if args.prompt is not None:
        return embed([args.prompt]).expand(args.n, -1)
    if args.from_image:
        return chain.embed_image_file(args.from_image).expand(args.n, -1)
    if args.mix:
        return embed(args.mix).mean(0, keepdim=True).expand(args.n, -1)
    if args.analogy:
        a, b, c = embed(args.analogy)
        return (a - b + c)[None].expand(args.n, -1)
    a, b = embed(args.interpolate)
    weights = torch.linspace(0, 1, args.frames)[:, None]
    return (1 - weights) * a + weights * b


def run_sample(args: argparse.Namespace) -> None:
    check_sample_args(args)
    if args.method == "score":
        run_score_sample(args)
        return
    check_decoder_args(args)
    check_image_files(args)
    chain = load_chain(args.decoder, args.translator, args.clip)
    conditioning = [args.prompt] * args.n if chain.conditions_on_text else target_embeddings(chain, args)
    guidance = None
    if args.image_guidance:
        size = args.size or chain.decoder.net.image_size
        base = to_rgb(open_image(args.image_guidance)).resize((size, size), Image.Resampling.LANCZOS)
        pixels = torch.from_numpy(np.asarray(base, dtype=np.float32)).permute(2, 0, 1)
        guidance = ImageGuidance(image=pixels[None] / 127.5 - 1.0, scale=args.ig_scale)
    upsampler = chain_upsampler(args, chain)
    images = chain.decode(
        conditioning, image_size=args.size, sampler=args.sampler, steps=args.steps, eta=args.eta,
        cfg_scale=args.cfg, threshold=args.threshold or None, image_guidance=guidance,
        generator=torch.Generator().manual_seed(args.seed), precision=args.precision,
    )  # fmt: skip
    if upsampler is not None:
        images = upsample_tensor(upsampler, images, args, None if chain.conditions_on_text else conditioning)
    columns = len(images) if args.interpolate else min(len(images), 8)
    path = save_png_atomic(grid_image(tensor_to_images(images), columns), args.out)
    side = images.shape[-1]
    print(f"{len(images)} images of {side}x{side} ({columns} per row) -> {path}")
