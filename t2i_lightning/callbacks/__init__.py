"""Callbacks a stage is given in its config to show its progress: sample grids of the decoder, the
upsampler, the score model and the captioner (PNG files and TensorBoard), and the decoder's sample
quality against the judge. Training plumbing (EMA, preemption, the non-finite guard) is in ``training/``."""
