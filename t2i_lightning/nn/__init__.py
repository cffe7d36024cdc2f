"""Networks: CLIP configurations and loading, the translator MLP, U-Nets, score network, captioner."""
