"""Text-conditioned decoder stage: the Imagen-like option of the 64px decoder.

The same diffusion training and sampling as :class:`~t2i_lightning.stages.decoder.DecoderStage`
(hybrid loss, learned variance, cosine schedule, EMA, classifier-free guidance, dynamic
thresholding), but the condition is a frozen text encoder's token sequence instead of a CLIP
image embedding (Saharia et al. 2022, "Imagen", sec. 2.1 and 2.5): the U-Net
(:class:`~t2i_lightning.nn.text_unet.TextConditionalUNet`) cross-attends to the tokens under their
mask and adds the pooled embedding to the timestep embedding. P2 weighting (Choi et al. 2022,
λ_t / (k + SNR(t))^γ) is on by default (γ = 1). Batches are plain image + caption batches
(:class:`~t2i_lightning.data.datamodule.ShardDataModule`); there are no embedding statistics.

Only DecoderStage's four conditioning hooks change. For classifier-free guidance (Ho & Salimans
2021; Imagen sec. 2.2) the null condition is a learned token at position 0 (mask True there only)
and a learned pooled vector, as long as a real condition so both stack in one batch.

The text encoder is a frozen helper (ARCHITECTURE.md, "Principles"): it is kept outside the module
tree, so neither the checkpoint's ``state_dict`` nor the EMA copy holds it; the hyperparameters
record how to rebuild it (its ``class_path``/``init_args``), so ``load_from_checkpoint`` works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from ..nn.text_encoder import TextEncoder
from ..training.stage_training import GENERATIVE
from .decoder import DecoderStage


class FrozenHelper:
    """Holds a frozen module outside ``nn.Module`` registration: not in ``state_dict``, not moved by
    ``.to()``, not put in train mode; a deep copy (e.g. the EMA model) shares it instead of copying it."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __deepcopy__(self, memo: dict) -> FrozenHelper:
        return self


class TextDecoderStage(DecoderStage):
    """Args:
    net: the denoiser ``net(x_t, t, cond)`` with ``cond`` a text-encoder dict
        (``t2i_lightning.nn.text_unet.TextConditionalUNet``); its ``token_dim``/``pooled_dim``
        must match the encoder's.
    text_encoder: a frozen :class:`~t2i_lightning.nn.text_encoder.TextEncoder`
        (``OpenClipTextTokens``, ``T5TokenEncoder``), or its ``{"class_path", "init_args"}``.
    The other arguments are :class:`DecoderStage`'s (there is no ``stats``); ``p2_gamma`` defaults
    to 1 (P2 weighting on).
    """

    conditions_on_text = True

    def __init__(
        self,
        net: nn.Module,
        text_encoder: TextEncoder,
        schedule: str = "cosine",
        timesteps: int = 1000,
        parameterization: str = "eps",
        vlb_weight: float = 1e-3,
        p2_gamma: float = 1.0,
        p2_k: float = 1.0,
        cond_drop_prob: float = 0.2,
        null_cond: str = "learned",
        lr: float = GENERATIVE.lr,
        weight_decay: float = GENERATIVE.weight_decay,
        warmup_steps: int = GENERATIVE.warmup_steps,
        lr_decay: str = GENERATIVE.lr_decay,
        ema_decay: float = GENERATIVE.ema_decay,
        ema_start_step: int = GENERATIVE.ema_start_step,
        samples: pl.Callback | None = None,
    ):
        encoder = TextEncoder.from_config(text_encoder) if isinstance(text_encoder, dict) else text_encoder
        if (encoder.token_dim, encoder.pooled_dim) != (net.token_dim, net.pooled_dim):
            raise ValueError(
                f"The text encoder gives tokens of width {encoder.token_dim} and a pooled vector of "
                f"{encoder.pooled_dim}, but the U-Net takes token_dim {net.token_dim} and pooled_dim {net.pooled_dim}"
            )
        # save_hyperparameters (in DecoderStage.__init__) reads this frame's arguments: outside LightningCLI
        # (which records its own config) it must find how to rebuild the encoder, not the encoder's weights.
        text_encoder = encoder.class_config()
        super().__init__(
            net, stats=None, schedule=schedule, timesteps=timesteps, parameterization=parameterization,
            vlb_weight=vlb_weight, p2_gamma=p2_gamma, p2_k=p2_k, cond_drop_prob=cond_drop_prob, null_cond=null_cond,
            lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, lr_decay=lr_decay, ema_decay=ema_decay,
            ema_start_step=ema_start_step, samples=samples,
        )  # fmt: skip
        self.frozen = FrozenHelper(encoder)
        self.text_encoder_identity = encoder.identity()

    @property
    def text_encoder(self) -> TextEncoder:
        return self.frozen.module

    # --- conditioning -------------------------------------------------------------------------

    def init_conditioning(self, stats: str | None, null_cond: str) -> None:
        """The null token and null pooled vector (no embedding statistics: text needs none)."""
        self.register_null("null_token", torch.zeros(self.net.token_dim), null_cond)
        self.register_null("null_pooled", torch.zeros(self.net.pooled_dim), null_cond)

    def on_fit_start(self) -> None:
        """Nothing to check: unlike the CLIP-embedding decoder, there is no stats.json to require."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["text_encoder_identity"] = self.text_encoder_identity

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a text encoder whose weights are not the ones the decoder was trained with."""
        recorded = checkpoint.get("text_encoder_identity") or {}
        changed = [k for k, v in recorded.items() if v and v != self.text_encoder_identity.get(k)]
        if changed:
            raise ValueError(
                f"The text encoder rebuilt from this checkpoint ({self.hparams['text_encoder']}) is not the one the "
                f"decoder was trained with ({', '.join(changed)} differ): pass the matching weights"
            )

    def condition(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Captions -> the text encoder's ``{"tokens", "mask", "pooled"}`` on the stage's device."""
        encoder = self.text_encoder.to(self.device)
        return {key: value.to(self.device) for key, value in encoder(captions).items()}

    def batch_condition(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The encoded captions of a training batch; an empty caption gets the null condition."""
        captions = list(batch["caption"])
        real = [i for i, caption in enumerate(captions) if caption.strip()]
        if len(real) == len(captions):
            return self.condition(captions)
        cond = {key: value.clone() for key, value in self.null_condition(len(captions)).items()}
        if real:
            encoded = self.condition([captions[i] for i in real])
            for key in cond:
                cond[key][real] = encoded[key].to(cond[key].dtype)
        return cond

    def null_condition(self, n: int) -> dict[str, torch.Tensor]:
        """The learned null token at position 0 (the only unmasked one) and the learned null pooled vector."""
        length, dim = self.text_encoder.max_length, self.net.token_dim
        first = self.null_token.expand(n, 1, dim)
        tokens = torch.cat([first, first.new_zeros(n, length - 1, dim)], dim=1)
        mask = torch.zeros(n, length, dtype=torch.bool, device=tokens.device)
        mask[:, 0] = True
        return {"tokens": tokens, "mask": mask, "pooled": self.null_pooled.expand(n, -1)}

    def drop_condition(self, cond: dict[str, torch.Tensor], drop: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cond`` with the rows where ``drop`` is True replaced by the null condition, key by key."""
        null = self.null_condition(len(drop))
        return {
            key: torch.where(drop.reshape(-1, *[1] * (value.ndim - 1)), null[key].to(value.dtype), value)
            for key, value in cond.items()
        }
