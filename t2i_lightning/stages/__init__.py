"""The LightningModules the pipeline trains, one per stage of :mod:`t2i_lightning.registry`: CLIP and
its embedding extraction, the translator, the diffusion stages (decoder, text decoder, upsampler, score
model), the captioner and the judge. Thin: unpack a batch, call the shared math in ``diffusion/``, log."""
