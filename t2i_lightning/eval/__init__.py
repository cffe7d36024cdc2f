"""The evaluation: the ablation table (``t2i evaluate``), its variants (how each row draws its images),
the reference set, the reports of the decoder and the upsampler, and the instruments (CLIP, Inception,
judge) that turn images into features, built on the pure functions in ``metrics/``."""
