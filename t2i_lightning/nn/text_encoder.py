"""Frozen text encoders for the text-conditioned (Imagen-like) decoder: captions -> token sequence.

Imagen (Saharia et al. 2022, sec. 2.1) conditions its diffusion models on the per-token output of
a frozen text encoder (T5-XXL; CLIP's text tower is compared in sec. 4.4 and fig. 4a): the
tokens feed cross-attention, and a pooled vector of them is added to the timestep embedding
(sec. 2.5, "Neural network architecture"). Every encoder here returns the same dict::

    {"tokens": B x L x D float, "mask": B x L bool (True = a real token), "pooled": B x P float}

with L fixed per encoder (``max_length``: captions are padded to it), so that conditions of
different batches, and the null condition of classifier-free guidance, stack along the batch.

The encoders are frozen helpers: ``eval()`` for good, no gradients, never a trainable submodule
of a stage (the stage holds them outside its module tree).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from ..registry import DEMO_CLIP, default_checkpoint, import_class
from .clip import clip_id, create_clip, file_digest, tokenizer_for


def check_captions(captions: Sequence[str]) -> list[str]:
    """``captions`` as a list, refusing a bare string, an empty list and empty or whitespace-only captions."""
    if isinstance(captions, str) or not captions:
        raise ValueError("Give a non-empty list of captions")
    captions = list(captions)
    empty = [i for i, caption in enumerate(captions) if not caption.strip()]
    if empty:
        raise ValueError(f"Captions must not be empty (empty at positions {empty})")
    return captions


class TextEncoder(nn.Module):
    """Base of the frozen text encoders: ``encoder(captions) -> {"tokens", "mask", "pooled"}``.

    Subclasses set ``token_dim`` (D), ``pooled_dim`` (P) and ``max_length`` (L), implement
    :meth:`encode`, call :meth:`freeze` at the end of ``__init__`` and record their constructor
    arguments in ``init_args`` (so a stage can save how to rebuild them, see :meth:`class_config`).
    """

    token_dim: int
    pooled_dim: int
    max_length: int
    init_args: dict

    def freeze(self) -> None:
        self.eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> TextEncoder:
        """Always stays in eval mode: it is frozen (no dropout, fixed normalisation)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @staticmethod
    def from_config(config: dict) -> TextEncoder:
        """Rebuild an encoder from :meth:`class_config`'s dict (only a ``TextEncoder`` subclass is built)."""
        cls = import_class(config["class_path"])
        if not (isinstance(cls, type) and issubclass(cls, TextEncoder)):
            raise ValueError(f"{config['class_path']} is not a TextEncoder")
        return cls(**config.get("init_args", {}))

    def class_config(self) -> dict:
        """``{"class_path", "init_args"}``: how LightningCLI (or ``instantiate_class``) rebuilds it."""
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": dict(self.init_args)}

    def identity(self) -> dict:
        """What identifies its weights (saved with a stage, checked when the stage is loaded)."""
        return {"class_path": self.class_config()["class_path"]}

    def encode(self, captions: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.encode(captions)


class OpenClipTextTokens(TextEncoder):
    """The per-token output of an open_clip text tower (the CLIP encoder of Imagen's fig. 4a).

    The tower is run as open_clip's ``encode_text`` runs it (token + positional embedding, the
    causal transformer, ``ln_final``) but every position is kept: ``tokens`` is B x
    ``context_length`` x width. The mask is True up to and including the end-of-text token
    (open_clip pads with id 0 after it; id 0 is also a real BPE token, "!", so the mask is taken from
    the EOT position, not from the id). ``pooled`` is ``encode_text``'s output (the EOT feature through
    the text projection), computed from the same pass.

    Args:
        model_name: open_clip model (the project's ``shapes-cnn-tiny``, ``ViT-B-32`` ...).
        pretrained: its weights (a CLIP-stage checkpoint, a weights file or an open_clip tag),
            as :func:`t2i_lightning.nn.clip.create_clip` takes them; None for random weights (tests).
    """

    def __init__(
        self, model_name: str = DEMO_CLIP, pretrained: str | None = default_checkpoint("clip")
    ):
        super().__init__()
        self.init_args = {"model_name": model_name, "pretrained": pretrained}
        clip = create_clip(model_name, pretrained)
        missing = [a for a in ("token_embedding", "positional_embedding", "transformer", "ln_final") if not hasattr(clip, a)]
        if missing:
            raise ValueError(
                f"{model_name}: only open_clip models with the built-in text transformer work here (no {missing[0]})"
            )
        del clip.visual  # the image tower is not needed
        self.clip = clip
        self.tokenizer = tokenizer_for(model_name)
        self.eot_id = self.tokenizer.eot_token_id
        self.max_length = clip.positional_embedding.shape[0]
        self.token_dim = clip.transformer.width
        projection = clip.text_projection
        self.pooled_dim = (
            projection.out_features if isinstance(projection, nn.Linear)
            else projection.shape[1] if projection is not None else self.token_dim
        )  # fmt: skip
        self.freeze()

    def identity(self) -> dict:
        pretrained = self.init_args["pretrained"]
        sha = file_digest(pretrained, 64) if pretrained and os.path.isfile(pretrained) else None
        return {**super().identity(), "model": self.init_args["model_name"], "clip_id": clip_id(**self.init_args),
                "checkpoint_sha256": sha}  # fmt: skip

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        from open_clip.transformer import text_global_pool

        clip = self.clip
        ids = self.tokenizer(check_captions(captions)).to(self.device)
        cast = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(ids).to(cast) + clip.positional_embedding.to(cast)
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
        eot = (ids == self.eot_id).int().argmax(dim=1)  # truncated captions end with EOT too
        mask = torch.arange(ids.shape[1], device=ids.device)[None] <= eot[:, None]
        pooled = text_global_pool(x, ids, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
        if isinstance(clip.text_projection, nn.Linear):
            pooled = clip.text_projection(pooled)
        elif clip.text_projection is not None:
            pooled = pooled @ clip.text_projection
        return {"tokens": x.float(), "mask": mask, "pooled": pooled.float()}


class T5TokenEncoder(TextEncoder):
    """A transformers T5 encoder (Imagen's choice, sec. 2.1 and 4.4) loaded from a local directory.

    ``path`` holds what ``T5EncoderModel.save_pretrained`` and the tokenizer's ``save_pretrained``
    wrote (e.g. ``google/t5-v1_1-base`` downloaded elsewhere); nothing is ever downloaded.
    Captions are padded to ``max_length`` tokens; longer ones are truncated with a warning.
    ``pooled`` is the mean of the real tokens (Imagen pools its text embeddings; the mean is the
    simplest pooling that ignores padding).
    """

    def __init__(self, path: str, max_length: int = 32):
        super().__init__()
        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"T5 encoder directory not found: {path} (a local directory written by save_pretrained: "
                "text encoders are never downloaded)"
            )
        from transformers import AutoTokenizer, T5EncoderModel

        self.init_args = {"path": path, "max_length": max_length}
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = T5EncoderModel.from_pretrained(path, local_files_only=True)
        self.max_length = max_length
        self.token_dim = self.pooled_dim = self.model.config.d_model
        self.freeze()

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        captions = check_captions(captions)
        lengths = [len(ids) for ids in self.tokenizer(captions)["input_ids"]]
        long = [c for c, n in zip(captions, lengths, strict=True) if n > self.max_length]
        if long:
            warnings.warn(
                f"{len(long)} caption(s) longer than {self.max_length} tokens truncated, e.g. {long[0][:80]!r}",
                stacklevel=3,
            )
        batch = self.tokenizer(
            captions, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        tokens = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].bool()
        weights = mask[..., None].to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return {"tokens": tokens.float(), "mask": mask, "pooled": pooled.float()}
