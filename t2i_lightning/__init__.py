"""t2i_lightning: a staged text-to-image diffusion pipeline built on PyTorch Lightning.

Stages (CLIP, translator, decoder, upsampler, score model, evaluation) are LightningModules
configured by YAML files under ``stages/`` and chained through checkpoint paths.
"""

__version__ = "0.1.0"
