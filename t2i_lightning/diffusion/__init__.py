"""The diffusion science shared by every stage, in pure torch (no Lightning).

Schedules and respacing, the forward process and its posterior, ε/x_0/v parameterizations, the
learned-range variance, losses (simple, hybrid with the VLB term, P2 weights, DSM), samplers (DDPM
ancestral, DDIM η, the network optionally in bfloat16), self-conditioning, guidance (classifier-free, thresholding, image guidance, gradient guidance) and
the conditioning augmentation of cascaded models (noise level, blur).

Importing the package imports no torch: the names a user chooses (:mod:`.names`) are here at once, and
every other name below loads its module on first use, so that ``t2i``'s parsers read the sampler names
without importing torch.
"""

from __future__ import annotations

import importlib

from .names import DEFAULT_CFG_SCALE, GUIDANCE_SCHEDULE_NAMES, SAMPLER_NAMES, SAMPLING_PRECISIONS

_LAZY = {
    "augmentation": ("gaussian_blur", "noise_augment"),
    "guidance": ("GUIDANCE_SCHEDULES", "GuidanceNorms", "ImageGuidance", "bayes_guided_score",
                 "classifier_free_guidance", "dynamic_threshold", "gradient_guidance", "static_threshold"),
    "losses": ("discretized_gaussian_log_likelihood", "dsm_loss", "hybrid_loss", "min_snr_weights", "normal_kl",
               "p2_weights", "simple_loss", "vlb_terms"),
    "model_output": ("Prediction", "p_mean_variance"),
    "network_precision": ("network_in_precision",),
    "parameterization": ("PARAMETERIZATIONS", "eps_from_v", "eps_from_x0", "predict_x0_eps", "v_from_x0_eps",
                         "x0_from_eps", "x0_from_v"),
    "process": ("q_posterior", "q_sample"),
    "samplers": ("SAMPLERS", "annealed_langevin", "ddim_sample", "ddpm_sample", "draw_samples"),
    "self_conditioning": ("SELF_CONDITION_PROB", "SelfConditionedSampling", "estimate_x0", "sampling_denoiser",
                          "training_inputs"),
    "schedules": ("NoiseSchedule", "cosine_alpha_bar", "cosine_betas", "extract", "geometric_sigmas", "linear_betas",
                  "shift_alpha_bar"),
    "variance": ("learned_range_log_variance", "split_learned_variance"),
}  # fmt: skip
"""Each pure-torch module and the names the package exports from it, loaded on first use."""
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["DEFAULT_CFG_SCALE", "GUIDANCE_SCHEDULE_NAMES", "SAMPLER_NAMES", "SAMPLING_PRECISIONS", *_MODULE_OF]


def __getattr__(name: str) -> object:
    """``name`` from its module, imported now (PEP 562: called only for a name not yet in the package)."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value
