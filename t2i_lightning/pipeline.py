"""Text-to-image inference chains built from stage checkpoints.

unCLIP-lite: caption -> CLIP text embedding -> translator -> CLIP image embedding -> 64px decoder
(:class:`TextToImage`). Imagen-like: caption -> the text-conditioned 64px decoder, which encodes
it itself (:class:`DirectTextToImage`). :func:`load_chain` picks the one a decoder checkpoint
needs. Each model is loaded from its checkpoint; a missing one names its path and the make target
that makes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from PIL import Image

from .data.image_io import open_image, to_rgb
from .nn.clip import create_clip, file_digest, preprocess_for, tokenizer_for, warn_if_truncated
from .registry import default_checkpoint
from .registry import stage as registry_stage
from .stages.captioner import CaptionerStage
from .stages.diffusion import DiffusionStage
from .stages.judge import JudgeStage
from .stages.score import ScoreStage
from .stages.translator import TranslatorStage
from .training.stage_loading import (
    checkpoint_hparams,
    checkpoint_stage,
    load_frozen_stage,
    require_checkpoint,
)

DEFAULT_CLIP = default_checkpoint("clip")
DEFAULT_TRANSLATOR = default_checkpoint("translator")
DEFAULT_DECODER = default_checkpoint("decoder")
DEFAULT_UPSAMPLER = default_checkpoint("upsampler")
DEFAULT_SCORE = default_checkpoint("score")
DEFAULT_CAPTIONER = default_checkpoint("captioner")
DEFAULT_JUDGE = default_checkpoint("judge")
NOISE_LEVEL_KEYS = ("sigma_max", "sigma_min", "num_levels")
OTHER_DECODERS = ("decoder_text", "decoder_latent", "decoder_text_latent")
"""The stages whose checkpoints a ``--decoder`` also takes: the text decoder and the latent decoders."""
DECODERS = ("decoder", *OTHER_DECODERS)


def is_text_decoder(path: str) -> bool:
    """Whether a decoder checkpoint is text-conditioned (the text decoder's, pixel or latent, in the registry's terms)."""
    hparams = checkpoint_hparams(path, "decoder")
    return any(registry_stage(name).made(hparams) for name in ("decoder_text", "decoder_text_latent"))


def load_upsampler(path: str = DEFAULT_UPSAMPLER, device: torch.device | str = "cpu") -> DiffusionStage:
    """The upsampler of a checkpoint (EMA weights), frozen, on ``device``."""
    return load_frozen_stage(path, "upsampler", device=device)


def load_score_model(path: str = DEFAULT_SCORE, device: torch.device | str = "cpu") -> ScoreStage:
    """The score model of a checkpoint (EMA weights), frozen, on ``device``."""
    return load_frozen_stage(path, "score", device=device)


def load_captioner(path: str = DEFAULT_CAPTIONER, device: torch.device | str = "cpu") -> CaptionerStage:
    """The noise-conditioned captioner of a checkpoint, frozen, on ``device``."""
    return load_frozen_stage(path, "captioner", device=device)


def check_same_noise_levels(score: ScoreStage, captioner: CaptionerStage) -> None:
    """Refuse a captioner trained at other noise levels than the score model it is to guide."""
    ours = {k: score.hparams[k] for k in NOISE_LEVEL_KEYS}
    theirs = {k: captioner.hparams[k] for k in NOISE_LEVEL_KEYS}
    if ours != theirs:
        raise ValueError(f"The captioner was trained at other noise levels ({theirs}) than the score model ({ours})")


def load_judge(path: str = DEFAULT_JUDGE, device: torch.device | str = "cpu") -> JudgeStage:
    """The shapes judge of a checkpoint, frozen (the evaluation's instrument), on ``device``."""
    return load_frozen_stage(path, "judge", device=device)


def load_decoder(path: str = DEFAULT_DECODER, device: torch.device | str = "cpu") -> DiffusionStage:
    """A 64px decoder of a checkpoint (EMA weights), frozen, on ``device``: conditioned on CLIP image
    embeddings (the decoder stage) or on captions (the text decoder), in pixels or in an autoencoder's latents."""
    return load_frozen_stage(path, "decoder", *OTHER_DECODERS, device=device)


def load_recorded_clip(
    identity: dict, owner: str, clip: str | None = None, model_name: str | None = None, device: torch.device | str = "cpu"
) -> torch.nn.Module:
    """The frozen CLIP a stage's embeddings came from, as its checkpoint recorded it (``clip_identity``).

    ``clip`` and ``model_name`` override the recorded weights and model; a CLIP checkpoint whose hash
    differs from the recorded one is refused (its embeddings would not be the ones ``owner`` learnt).
    """
    model_name = model_name or identity.get("model")
    clip = clip or identity.get("pretrained") or DEFAULT_CLIP
    if clip.endswith(".ckpt"):
        require_checkpoint(clip, "clip")
    recorded = identity.get("checkpoint_sha256")
    if recorded and os.path.isfile(clip) and file_digest(clip, 64) != recorded:
        raise ValueError(
            f"CLIP checkpoint {clip} is not the one the {owner}'s embeddings were extracted with "
            f"(sha256 {recorded[:12]}...); re-run `make {registry_stage('embed').make_target}` and the stages after it, or pass the matching --clip"
        )
    return create_clip(model_name, clip).eval().requires_grad_(False).to(device)


@torch.no_grad()
def clip_image_embeddings(clip: torch.nn.Module, images: Sequence[Image.Image]) -> torch.Tensor:
    """Raw CLIP image embeddings of PIL images, with CLIP's own preprocessing (as extraction), computed
    on the CLIP's device."""
    preprocess = preprocess_for(clip)
    device = next(clip.parameters()).device
    return clip.encode_image(torch.stack([preprocess(to_rgb(image)) for image in images]).to(device))


class TextToImageEmbedding:
    """Captions -> translated CLIP image embeddings (raw CLIP space, as the decoder is conditioned).

    Build it with :meth:`from_checkpoints`; call it with a list of captions.
    """

    def __init__(self, clip: torch.nn.Module, tokenizer, translator: TranslatorStage):
        self.clip = clip.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.translator = translator.eval().requires_grad_(False)

    @classmethod
    def from_checkpoints(
        cls, translator: str = DEFAULT_TRANSLATOR, clip: str | None = None, model_name: str | None = None,
        device: torch.device | str = "cpu",
    ) -> TextToImageEmbedding:  # fmt: skip
        """Load the translator and the CLIP it was trained with, on ``device``.

        ``clip`` and ``model_name`` default to what the translator's checkpoint recorded from
        its embeddings' ``stats.json``; a CLIP checkpoint whose hash differs from the recorded
        one is refused (its embeddings would not be the ones the translator learnt).
        """
        stage = load_frozen_stage(translator, "translator", device=device)
        model_name = model_name or stage.clip_identity.get("model")
        clip_model = load_recorded_clip(stage.clip_identity, "translator", clip, model_name, device)
        return cls(clip_model, tokenizer_for(model_name), stage)

    @torch.no_grad()
    def text_embeddings(self, captions: Sequence[str]) -> torch.Tensor:
        """Raw CLIP text embeddings of ``captions`` (as extraction computes them)."""
        if isinstance(captions, str) or not captions or not all(c.strip() for c in captions):
            raise ValueError("Give a non-empty list of non-empty captions")
        warn_if_truncated(self.tokenizer, captions)
        return self.clip.encode_text(self.tokenizer(list(captions)).to(self.translator.device))

    @torch.no_grad()
    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        """Translated CLIP image embeddings of ``captions``, shape ``(len(captions), dim)``."""
        return self.translator(self.text_embeddings(captions))

    def image_embeddings(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Raw CLIP image embeddings of PIL images, with CLIP's own preprocessing (as extraction)."""
        return clip_image_embeddings(self.clip, images)


class TextToImage:
    """Captions (or CLIP image embeddings) -> 64px images, through the translator and the decoder.

    Build it with :meth:`from_checkpoints`; :meth:`__call__` takes captions, :meth:`decode` takes
    raw CLIP image embeddings (for reconstructions and embedding arithmetic).
    """

    conditions_on_text = False

    def __init__(self, embedder: TextToImageEmbedding, decoder: DiffusionStage):
        self.embedder = embedder
        self.decoder = decoder.eval().requires_grad_(False)

    @classmethod
    def from_checkpoints(
        cls, decoder: str = DEFAULT_DECODER, translator: str = DEFAULT_TRANSLATOR, clip: str | None = None,
        device: torch.device | str = "cpu",
    ) -> TextToImage:  # fmt: skip
        """Load the decoder (EMA weights), the translator and their CLIP on ``device``; refuse a decoder
        trained on another CLIP's embeddings than the translator's."""
        stage = load_decoder(decoder, device)
        if stage.conditions_on_text:
            raise ValueError(f"{decoder} is a text-conditioned decoder: it takes captions itself (use load_chain)")
        embedder = TextToImageEmbedding.from_checkpoints(translator, clip, device=device)
        ours, theirs = stage.clip_identity.get("clip_id"), embedder.translator.clip_identity.get("clip_id")
        if ours and theirs and ours != theirs:
            retrain = registry_stage(checkpoint_stage(decoder, *DECODERS)).make_target
            raise ValueError(
                f"The decoder was trained on {ours} embeddings but the translator on {theirs}: "
                f"re-run `make {registry_stage('translator').make_target} {retrain}` "
                "on one embedding directory"
            )
        return cls(embedder, stage)

    def decode(self, image_embeddings: torch.Tensor, **options) -> torch.Tensor:
        """Images in [-1, 1] for raw CLIP image embeddings; ``options`` go to :meth:`DiffusionStage.sample`."""
        return self.decoder.sample(image_embeddings, **options)

    def __call__(self, captions: Sequence[str], **options) -> torch.Tensor:
        """Images in [-1, 1] for ``captions`` (one image per caption)."""
        return self.decode(self.embedder(captions), **options)

    def embed_image_file(self, path: str) -> torch.Tensor:
        """The raw CLIP image embedding of an image file (the study's reconstruction input), 1 x D."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image not found: {path}")
        return self.embedder.image_embeddings([open_image(path)])


class DirectTextToImage:
    """Captions -> 64px images through a text-conditioned (Imagen-like) decoder alone: no translator,
    no CLIP image embedding; the decoder's own frozen text encoder reads the captions."""

    conditions_on_text = True

    def __init__(self, decoder: DiffusionStage):
        self.decoder = decoder.eval().requires_grad_(False)

    def decode(self, captions: Sequence[str], **options) -> torch.Tensor:
        """Images in [-1, 1], one per caption; ``options`` go to :meth:`DiffusionStage.sample`."""
        warn_if_truncated(getattr(self.decoder.conditioning.text_encoder, "tokenizer", None), captions)
        return self.decoder.sample(list(captions), **options)

    __call__ = decode


def load_chain(
    decoder: str = DEFAULT_DECODER, translator: str = DEFAULT_TRANSLATOR, clip: str | None = None,
    device: torch.device | str = "cpu",
) -> TextToImage | DirectTextToImage:  # fmt: skip
    """The chain a decoder checkpoint needs, on ``device``: the decoder alone when it is text-conditioned,
    else the translator, its CLIP and the decoder (``translator`` and ``clip`` are then used)."""
    if is_text_decoder(decoder):
        return DirectTextToImage(load_decoder(decoder, device))
    return TextToImage.from_checkpoints(decoder, translator, clip, device)
