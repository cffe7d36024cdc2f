"""The one table of the pipeline's stages: what each is, where its config, run folder and checkpoint
live, which make target produces it and what it needs upstream.

The pipeline's default checkpoints, the evaluation's variants, the commands' defaults, ``make help``'s
stage list and the "not found, produce it with `make ...`" messages all read this table; nothing else
spells a stage's run folder or make target. It imports nothing from the package (the LightningModule
is named by its class path, resolved with :func:`stage_class`), so every layer may read it.

``python -m t2i_lightning.registry`` prints the table (``make help`` shows it).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

RUNS = "runs"
DEMO_CLIP = "shapes-cnn-tiny"
"""The demo's CLIP: the Makefile's ``CLIP_MODEL`` and the ``stages/*.yaml`` name the same (tested)."""
DEMO_EMBEDDINGS = f"data/shapes/emb-{DEMO_CLIP}"
"""The directory ``make embed`` writes the demo's embeddings to."""
DIFFUSION = "t2i_lightning.stages.diffusion.DiffusionStage"
LATENT_SPACE = "t2i_lightning.stages.latent_space.LatentSpace"
"""The one LightningModule of the diffusion stages (decoder, text decoder, upsampler); they differ by conditioning."""


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline. ``name`` is its run folder under ``runs/`` (the TensorBoard logger's
    name in its config); ``needs`` names the stages whose outputs it reads; ``conditioning`` is the class
    path of a diffusion stage's injected conditioning (None: unconditional, or not a diffusion stage) and
    ``space`` that of its injected space (None: pixels)."""

    name: str
    class_path: str
    config: str
    make_target: str
    needs: tuple[str, ...]
    output: str
    trains: bool = True
    conditioning: str | None = None
    space: str | None = None

    def made(self, hparams: dict) -> bool:
        """Whether a checkpoint's hyperparameters (as the CLI recorded them) are this stage's."""

        def class_path(key: str) -> str | None:
            recorded = hparams.get(key)
            return recorded.get("class_path") if isinstance(recorded, dict) else None

        injected = (class_path("conditioning"), class_path("space"))
        return hparams.get("_class_path") == self.class_path and injected == (self.conditioning, self.space)

    def checkpoint(self, runs: str = RUNS) -> str:
        """The checkpoint the next stage reads: ``<runs>/<name>/checkpoints/last.ckpt``."""
        if not self.trains:
            raise ValueError(f"the {self.name} stage writes {self.output}, not a checkpoint")
        return f"{runs}/{self.name}/checkpoints/last.ckpt"

    def run_dir(self, runs: str = RUNS) -> str:
        return f"{runs}/{self.name}"


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("clip", "t2i_lightning.stages.clip.CLIPStage", "stages/clip.yaml", "clip", (),
              "the project's CLIP (skipped with a pretrained CLIP)"),
        Stage("embed", "t2i_lightning.stages.embed.EmbedStage", "stages/embed.yaml", "embed", ("clip",),
              "CLIP embedding shards mirroring the image shards + stats.json", trains=False),
        Stage("translator", "t2i_lightning.stages.translator.TranslatorStage", "stages/translator.yaml",
              "train-translator", ("embed",), "text embedding -> image embedding MLP"),
        Stage("decoder", DIFFUSION, "stages/decoder.yaml", "train-decoder", ("embed", "translator"),
              "64px diffusion decoder conditioned on the image embedding",
              conditioning="t2i_lightning.stages.conditioning.ImageEmbedding"),
        Stage("decoder_text", DIFFUSION, "stages/decoder_text.yaml", "train-decoder-text", ("clip",),
              "64px decoder conditioned on text tokens (Imagen-like)",
              conditioning="t2i_lightning.stages.text_tokens.TextTokens"),
        Stage("autoencoder", "t2i_lightning.stages.autoencoder.AutoencoderStage", "stages/autoencoder.yaml",
              "train-autoencoder", (), "KL autoencoder of the latent route (64px -> latents)"),
        Stage("encode", "t2i_lightning.stages.encode_latents.LatentEncodeStage", "stages/encode_latents.yaml",
              "encode-latents", ("autoencoder",), "latent shards mirroring the image shards + stats.json", trains=False),
        Stage("decoder_latent", DIFFUSION, "stages/decoder_latent.yaml", "train-decoder-latent",
              ("encode", "embed", "translator"), "latent decoder conditioned on the image embedding",
              conditioning="t2i_lightning.stages.conditioning.ImageEmbedding", space=LATENT_SPACE),
        Stage("decoder_text_latent", DIFFUSION, "stages/decoder_text_latent.yaml", "train-decoder-text-latent",
              ("encode", "clip"), "latent decoder conditioned on text tokens",
              conditioning="t2i_lightning.stages.text_tokens.TextTokens", space=LATENT_SPACE),
        Stage("upsampler", DIFFUSION, "stages/upsampler.yaml", "train-upsampler", (),
              "64 -> 256 diffusion upsampler", conditioning="t2i_lightning.stages.low_res_image.LowResImage"),
        Stage("score", "t2i_lightning.stages.score.ScoreStage", "stages/score.yaml", "train-score", (),
              "NCSN score model (32px, unconditional)"),
        Stage("captioner", "t2i_lightning.stages.captioner.CaptionerStage", "stages/captioner.yaml",
              "train-captioner", (), "noise-conditioned captioner that guides the score model"),
        Stage("judge", "t2i_lightning.stages.judge.JudgeStage", "stages/judge.yaml", "judge", (),
              "the evaluation's scene reader on shapes"),
    )
}  # fmt: skip


def stage(name: str) -> Stage:
    """The stage called ``name``, or an error listing the stages there are."""
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(f"no stage {name!r}; the stages are {', '.join(STAGES)}") from None


def default_checkpoint(name: str) -> str:
    """Where ``make`` writes the named stage's checkpoint by default."""
    return stage(name).checkpoint()


def import_class(class_path: str) -> type | None:
    """The object a dotted ``module.Name`` path names, its module imported on demand (ImportError when there is
    no such module); None when the module has no such name."""
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name, None)


def stage_class(name: str) -> type:
    """The LightningModule class of the named stage (imported on demand)."""
    class_path = stage(name).class_path
    cls = import_class(class_path)
    if cls is None:
        raise AttributeError(f"stage {name!r}: no class {class_path}")
    return cls


def made_by(hparams: dict) -> str | None:
    """The name of the stage whose checkpoint has these hyperparameters, or None."""
    return next((s.name for s in STAGES.values() if s.made(hparams)), None)


def make_command(name: str) -> str:
    """The named stage's make command in backquotes, as messages quote it: ```make train-decoder```."""
    return f"`make {stage(name).make_target}`"


def missing_checkpoint_message(path: str, name: str) -> str:
    """What a user reads when the named stage's checkpoint is not at ``path``: the make target of the stage whose
    default checkpoint ``path`` is (a decoder option's default may be a latent decoder's), else the named stage's."""
    owner = next((s for s in STAGES.values() if s.trains and os.path.normpath(path) == os.path.normpath(s.checkpoint())), stage(name))
    return f"Checkpoint not found: {path} (produce it with `make {owner.make_target}`)"


def table() -> str:
    """The stages one a line, as ``make help`` prints them."""
    rows = [f"  {s.name:<20}{s.config:<33}make {s.make_target:<26}{s.output}" for s in STAGES.values()]
    return "\n".join(["Stages (config, make target, output):", *rows])


if __name__ == "__main__":
    print(table())
