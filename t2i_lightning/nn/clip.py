"""open_clip models: the project's small configs, and loading by name, tag or local file.

``shapes-cnn-tiny`` (``clip_configs/``), the demo's CLIP, is a residual CNN image tower at 64px
with attention pooling (:mod:`t2i_lightning.nn.cnn_tower`, built by timm through open_clip) and a
3-layer text transformer, sized to train on the shapes data on a CPU; ``shapes-cnn-micro`` is a
32px version for tests. ``shapes-vitc-tiny`` (a ViT/8 with a convolutional stem,
:mod:`t2i_lightning.nn.conv_stem_vit`) and ``shapes-vit-tiny`` (the plain ViT/8) are the earlier
towers, kept for comparison; ``shapes-vitc-micro`` is its test size. Any open_clip model name
works the same way (``ViT-B-32`` ...), with ``pretrained`` naming an open_clip tag
(``laion2b_s34b_b79k``, downloaded where there is internet; offline, found in the Hugging Face
cache or refused at once) or a local file, read without running code in it:

- a checkpoint of this project's CLIP stage;
- an open_clip weights file (a ``torch.save`` state dict, ``.bin``/``.pt``, or ``.safetensors``),
  loaded by open_clip (``torch.load(weights_only=True)``);
- OpenAI's weights: their original TorchScript archive (``ViT-B-32.pt`` of openai/CLIP, its
  tensors read by :mod:`t2i_lightning.nn.torchscript_weights`) or its state dict (recognised by
  the archive's ``input_resolution``/``context_length``/``vocab_size`` entries). These are built
  with QuickGELU, as OpenAI trained them: ``ViT-B-32`` then is ``ViT-B-32-quickgelu``. OpenAI's
  weights already converted to open_clip's format carry no such mark: name the ``-quickgelu``
  model for them, as open_clip asks.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import load_file as load_safetensors
from torchvision.transforms import Compose, Normalize, ToTensor
from torchvision.transforms.functional import pil_to_tensor

from ..registry import make_command
from .clip_hub import PretrainedWeightsError, clip_from_tag
from .torchscript_weights import is_torchscript_archive, read_state_dict

CONFIG_DIR = Path(__file__).parent / "clip_configs"
_registered = False


def register_project_configs() -> None:
    """Make the project's model configs (``shapes-cnn-tiny`` ...) known to open_clip."""
    global _registered
    if not _registered:
        from . import cnn_tower, conv_stem_vit  # noqa: F401  (register the project's image towers with timm)

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def file_digest(path: str | os.PathLike, length: int = 12) -> str:
    """The first ``length`` hex digits of a file's SHA-256 (identifies a checkpoint)."""
    sha = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:length]


def stage_state_dict(checkpoint: dict) -> dict[str, torch.Tensor] | None:
    """The open_clip weights inside a CLIP-stage Lightning checkpoint (keys ``clip.*``), or None."""
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not state:
        return None
    weights = {k[len("clip.") :]: v for k, v in state.items() if k.startswith("clip.")}
    return weights or None


RANDOM_INIT_NOTICES = ("No pretrained weights loaded", "No pretrained configuration specified")
"""open_clip's and timm's notices that a model was built with random weights."""


class _DropRandomInitNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(RANDOM_INIT_NOTICES)


@contextlib.contextmanager
def random_init_notices_silenced() -> Iterator[None]:
    """Build a model without open_clip's and timm's "initialized randomly" notices: true of the freshly
    built model, false of the one the user gets when a trained checkpoint is loaded into it at once."""
    drop, loggers = _DropRandomInitNotices(), [logging.getLogger(), logging.getLogger("timm.models._builder")]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


WEIGHTS_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")
"""Sizes that OpenAI's CLIP archives keep as 0-d tensors beside the weights (openai/CLIP's build_model drops them)."""
OPENAI_NON_WEIGHTS = ("attn_mask",)
"""Plain tensor attributes of OpenAI's modules (the text tower's causal mask) that are no weights: open_clip
builds its own."""


def create_clip(model_name: str, pretrained: str | None = None) -> torch.nn.Module:
    """Build an open_clip model, randomly initialised or with ``pretrained`` weights.

    ``pretrained`` is None (random init, to be trained), an existing file (a checkpoint of the
    CLIP stage, an open_clip or OpenAI weights file: :func:`read_weights_file`), or an open_clip
    pretrained tag (:func:`_clip_from_tag`).
    """
    register_project_configs()
    if model_name not in open_clip.list_models():
        raise ValueError(f"Unknown open_clip model {model_name!r}; e.g. shapes-cnn-tiny, ViT-B-32")
    if pretrained is None:
        return open_clip.create_model(model_name)
    if os.path.isfile(pretrained):
        return _clip_from_file(model_name, pretrained)
    if os.sep in pretrained or pretrained.endswith(WEIGHTS_SUFFIXES):
        raise PretrainedWeightsError(f"CLIP weights file not found: {pretrained}")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        raise ValueError(
            f"{model_name} has no pretrained tag {pretrained!r}; known tags: {', '.join(tags) or 'none'}"
        )
    return clip_from_tag(model_name, pretrained)


def read_weights_file(path: str) -> dict[str, Any]:
    """A weights file's contents, read without running code in it: the tensors of a TorchScript archive
    (OpenAI's own files, :mod:`.torchscript_weights`), a safetensors file, or what
    ``torch.load(weights_only=True)`` reads (a state dict, a Lightning checkpoint)."""
    if is_torchscript_archive(path):
        return read_state_dict(path)
    if path.endswith(".safetensors"):
        return load_safetensors(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _clip_from_file(model_name: str, path: str) -> torch.nn.Module:
    """``model_name`` with the weights of the file at ``path``: a CLIP-stage checkpoint's, OpenAI's
    (a TorchScript archive, or a state dict with OpenAI's size entries), or an open_clip state dict,
    which open_clip loads itself (``weights_only=True``, safetensors, its format conversions)."""
    contents = read_weights_file(path)
    weights = stage_state_dict(contents)
    if weights is None and isinstance(contents, dict) and "hyper_parameters" in contents:
        found = (contents["hyper_parameters"] or {}).get("_class_path", "another stage")
        raise ValueError(f"{path} is a checkpoint of {found}, not CLIP weights ({make_command('clip')} writes one)")
    if weights is not None:
        _check_trained_as(contents, path, model_name)
        with random_init_notices_silenced():  # the trained weights are loaded right after
            return _with_weights(open_clip.create_model(model_name), weights, path, model_name)
    if is_torchscript_archive(path) or _has_openai_metadata(contents):
        return _openai_clip(model_name, contents, path)
    try:
        return open_clip.create_model(model_name, pretrained=path)
    except (RuntimeError, AssertionError) as error:  # open_clip's strict load_state_dict, its resizing's checks
        raise ValueError(_not_these_weights(path, model_name, error)) from error


def _check_trained_as(checkpoint: dict, path: str, model_name: str) -> None:
    trained_as = (checkpoint.get("hyper_parameters") or {}).get("model_name")
    if trained_as and trained_as != model_name:
        raise ValueError(
            f"{path} holds a {trained_as} CLIP, not {model_name}: name {trained_as} as the model "
            f"(make: CLIP_MODEL={trained_as}), or train a {model_name} ({make_command('clip')}, after moving the old run away)"
        )


def _openai_clip(model_name: str, weights: dict[str, torch.Tensor], path: str) -> torch.nn.Module:
    """``model_name`` with OpenAI's weights, built with QuickGELU as OpenAI trained them (what open_clip's
    ``-quickgelu`` models are, and its "openai" tags ask for); the archives' size entries and the
    attention masks are dropped where the model has no such entry, every other key must match."""
    with random_init_notices_silenced():  # the weights are loaded right after
        model = open_clip.create_model(model_name, force_quick_gelu=True)
    expected = model.state_dict().keys()
    inert = {key for key in weights if key not in expected and _openai_non_weight(key)}
    kept = {key: value for key, value in weights.items() if key not in inert}
    return _with_weights(model, kept, path, model_name)


def _has_openai_metadata(contents: object) -> bool:
    return isinstance(contents, dict) and any(key in contents for key in OPENAI_METADATA)


def _openai_non_weight(key: str) -> bool:
    return key in OPENAI_METADATA or key.rsplit(".", 1)[-1] in OPENAI_NON_WEIGHTS


def _with_weights(model: torch.nn.Module, weights: dict, path: str, model_name: str) -> torch.nn.Module:
    """``model`` with ``weights`` loaded, every key and shape matching (else a ValueError naming them)."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise ValueError(_not_these_weights(path, model_name, error)) from error
    return model


def _not_these_weights(path: str, model_name: str, error: Exception, limit: int = 600) -> str:
    found = " ".join(str(error).split())
    found = found if len(found) <= limit else found[:limit] + " ..."
    return f"{path} does not hold {model_name} weights ({found}); name the model they are for (make: CLIP_MODEL=NAME)"


def clip_id(model_name: str, pretrained: str | None) -> str:
    """A short name for a CLIP (model and weights), used in embedding directory names."""
    if pretrained is None:
        return f"{model_name}-random"
    if os.path.isfile(pretrained):
        return f"{model_name}-{file_digest(pretrained, 8)}"
    return f"{model_name}-{pretrained}"


def preprocess_for(model: torch.nn.Module):
    """CLIP's own evaluation preprocessing for ``model`` (resize, centre crop, normalise)."""
    return open_clip.image_transform(model.visual.image_size, is_train=False, **_preprocess_cfg(model))


class BatchedPreprocess:
    """CLIP's own evaluation preprocessing split where single images become a batch.

    ``image`` runs the PIL steps (resize, centre crop, mode) and stops at an 8-bit CHW tensor, so a
    loader's workers do less work and hand over a quarter of the bytes; ``batch`` scales a stacked
    uint8 batch to [0, 1] and normalises it on the model's device. ``batch(stack(image(x)))``
    equals ``stack(preprocess(x))`` bit for bit: the same elementwise float32 operations
    (torchvision's ``to_tensor`` divides by 255, ``Normalize`` subtracts the mean and divides by
    the std). A preprocessing that does not end in ToTensor and Normalize runs whole in ``image``,
    and ``batch`` passes its batches through.
    """

    def __init__(self, preprocess: Compose):
        steps = list(preprocess.transforms)
        self.normalize = None
        if len(steps) >= 2 and isinstance(steps[-2], ToTensor) and isinstance(steps[-1], Normalize):
            self.normalize = steps[-1]
            self.image = Compose([*steps[:-2], pil_to_tensor])
        else:
            self.image = preprocess

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """A batch from ``image`` as the network's input (float32, normalised)."""
        if self.normalize is None or images.dtype != torch.uint8:
            return images
        return self.normalize(images.float().div(255))


def batched_preprocess_for(model: torch.nn.Module) -> BatchedPreprocess:
    """:func:`preprocess_for` split into per-image PIL steps and a per-batch normalisation."""
    return BatchedPreprocess(preprocess_for(model))


def _preprocess_cfg(model: torch.nn.Module) -> dict:
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    keys = ("mean", "std", "interpolation", "resize_mode")
    return {key: cfg[key] for key in keys if key in cfg}


def tokenizer_for(model_name: str):
    """open_clip's tokenizer for ``model_name`` (its context length)."""
    register_project_configs()
    return open_clip.get_tokenizer(model_name)


def warn_if_truncated(tokenizer, captions: Sequence[str]) -> None:
    """Warn when an open_clip tokenizer will cut captions to its context length (start and end tokens
    included); tokenizers without ``encode`` and ``context_length`` warn themselves or never cut."""
    limit = getattr(tokenizer, "context_length", None)
    if not limit or not hasattr(tokenizer, "encode"):
        return
    long = [c for c in captions if len(tokenizer.encode(c)) + 2 > limit]
    if long:
        warnings.warn(
            f"{len(long)} caption(s) longer than the tokenizer's context of {limit} tokens are truncated, "
            f"e.g. {long[0][:80]!r}",
            stacklevel=2,
        )
