"""Pure metric functions on tensors, images and captions: colour and layout error, retrieval recall,
zero-shot accuracy, feature-space distances, exact text-image alignment on shapes, super-resolution
quality, and the shapes scene labels the judge is trained on. No models are loaded here; ``eval/``
builds the evaluation table on these."""
