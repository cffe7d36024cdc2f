"""The names of the evaluation table's fixed rows, without torch: ``t2i evaluate --help`` lists them
before anything heavy is imported. :data:`t2i_lightning.eval.variants.FIXED` defines each (what it
draws); its keys are these names, in this order (tested)."""

from __future__ import annotations

FIXED_VARIANTS = ("real", "full", "decoder_only", "no_translator", "full_256", "ddpm", "no_dynamic_threshold",
                  "text_decoder", "score_unguided", "full_latent", "decoder_only_latent", "no_translator_latent",
                  "text_decoder_latent", "autoencoder")  # fmt: skip
