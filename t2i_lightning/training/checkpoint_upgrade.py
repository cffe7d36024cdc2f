"""Checkpoints of the three diffusion classes that became one :class:`~t2i_lightning.stages.diffusion.DiffusionStage`.

Until December 2026 the decoder, the text decoder and the upsampler were three LightningModules
(``DecoderStage``, ``TextDecoderStage``, ``UpsamplerStage``) whose conditioning settings were their own
hyperparameters and whose conditioning tensors (the null vectors, the embedding statistics, the
upsampler's predictor) sat at the top of the state dict. Now the stage is one class and those live in
its injected ``conditioning``. :func:`upgrade` rewrites such a checkpoint: the settings move into the
``conditioning`` config, the tensors under ``conditioning.``, in the EMA weights (``state_dict``) and the
raw ones (``current_model_state``). The parameters keep their order, so the optimizer state, the EMA
state and the training progress carry over unchanged: an upgraded checkpoint samples and resumes as
the old one did. ``t2i upgrade-checkpoint`` applies it to files; loaders and resume name that command
when they meet an old checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DIFFUSION_STAGE = "t2i_lightning.stages.diffusion.DiffusionStage"
CONDITIONING_TENSORS = ("null_embedding", "null_token", "null_pooled", "mean_img", "std_img")
MODEL_STATES = ("state_dict", "current_model_state")


@dataclass(frozen=True)
class LegacyStage:
    """What one old class's hyperparameters become: its conditioning's class path, the old names of the
    conditioning's arguments (old -> new), and the DiffusionStage arguments it did not have, at the values
    the old class behaved with (so a resumed run finds no changed setting)."""

    conditioning: str
    arguments: dict[str, str]
    settings: dict[str, Any]


_GUIDED = {"cond_drop_prob": "drop_prob", "null_cond": "null_cond"}
_DECODER_SAMPLING = {"sampler": "ddim", "steps": 50, "threshold": 0.995}  # the old classes' sample() defaults
LEGACY_STAGES = {
    "t2i_lightning.stages.decoder.DecoderStage": LegacyStage(
        "t2i_lightning.stages.conditioning.ImageEmbedding", {"stats": "stats", **_GUIDED}, _DECODER_SAMPLING
    ),
    "t2i_lightning.stages.text_decoder.TextDecoderStage": LegacyStage(
        "t2i_lightning.stages.text_tokens.TextTokens", {"text_encoder": "text_encoder", **_GUIDED},
        {**_DECODER_SAMPLING, "schedule_shift": 1.0},
    ),
    "t2i_lightning.stages.upsampler.UpsamplerStage": LegacyStage(
        "t2i_lightning.stages.low_res_image.LowResImage",
        {name: name for name in ("stats", "aug_max", "blur_prob", "blur_sigma", "aug_level", "residual",
                                 "residual_scale", "predictor")},  # fmt: skip
        {"threshold": None, "schedule_shift": 1.0, "p2_gamma": 0.0, "p2_k": 1.0},  # static clipping, no P2, unshifted
    ),
}


def is_legacy(hparams: dict) -> bool:
    """Whether a checkpoint's hyperparameters are one of the old diffusion classes'."""
    return isinstance(hparams, dict) and hparams.get("_class_path") in LEGACY_STAGES


def legacy_message(path: str) -> str:
    """What a user reads when an old diffusion checkpoint is loaded or resumed."""
    return (
        f"{path} was written by one of the diffusion classes that are now one DiffusionStage; "
        f"`t2i upgrade-checkpoint {path}` converts it (weights, EMA, optimizer state and progress are kept)"
    )


def _moved(name: str) -> bool:
    return name in CONDITIONING_TENSORS or name.startswith("predictor.")


def upgrade(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A copy of an old diffusion checkpoint in the DiffusionStage layout (the tensors are shared, not copied)."""
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    if not is_legacy(hparams):
        raise ValueError(f"not a checkpoint of {', '.join(c.rpartition('.')[2] for c in LEGACY_STAGES)}")
    legacy = LEGACY_STAGES[hparams["_class_path"]]
    arguments = {new: hparams.pop(old) for old, new in legacy.arguments.items() if old in hparams}
    hparams = {**hparams, **{k: v for k, v in legacy.settings.items() if k not in hparams}}
    hparams["conditioning"] = {"class_path": legacy.conditioning, "init_args": arguments}
    hparams["_class_path"] = DIFFUSION_STAGE
    upgraded = {**checkpoint, "hyper_parameters": hparams}
    for key in MODEL_STATES:
        if key in checkpoint:
            upgraded[key] = {(f"conditioning.{k}" if _moved(k) else k): v for k, v in checkpoint[key].items()}
    return upgraded
