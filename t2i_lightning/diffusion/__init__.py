"""The diffusion science shared by every stage, in pure torch (no Lightning).

Schedules and respacing, the forward process and its posterior, ε/x_0/v parameterizations, the
learned-range variance, losses (simple, hybrid with the VLB term, P2 weights, DSM), samplers (DDPM
ancestral, DDIM η, the network optionally in bfloat16), guidance (classifier-free, thresholding, image guidance, gradient guidance) and
the conditioning augmentation of cascaded models (noise level, blur).
"""

from .augmentation import gaussian_blur, noise_augment
from .guidance import (
    DEFAULT_CFG_SCALE,
    GUIDANCE_SCHEDULES,
    GuidanceNorms,
    ImageGuidance,
    bayes_guided_score,
    classifier_free_guidance,
    dynamic_threshold,
    gradient_guidance,
    static_threshold,
)
from .losses import (
    discretized_gaussian_log_likelihood,
    dsm_loss,
    hybrid_loss,
    normal_kl,
    p2_weights,
    simple_loss,
    vlb_terms,
)
from .model_output import Prediction, p_mean_variance
from .network_precision import SAMPLING_PRECISIONS, network_in_precision
from .parameterization import (
    PARAMETERIZATIONS,
    eps_from_v,
    eps_from_x0,
    predict_x0_eps,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)
from .process import q_posterior, q_sample
from .samplers import SAMPLERS, annealed_langevin, ddim_sample, ddpm_sample, draw_samples
from .schedules import (
    NoiseSchedule,
    cosine_alpha_bar,
    cosine_betas,
    extract,
    geometric_sigmas,
    linear_betas,
    shift_alpha_bar,
)
from .variance import learned_range_log_variance, split_learned_variance

__all__ = [
    "DEFAULT_CFG_SCALE",
    "GUIDANCE_SCHEDULES",
    "PARAMETERIZATIONS",
    "SAMPLERS",
    "draw_samples",
    "SAMPLING_PRECISIONS",
    "GuidanceNorms",
    "ImageGuidance",
    "NoiseSchedule",
    "Prediction",
    "annealed_langevin",
    "bayes_guided_score",
    "classifier_free_guidance",
    "cosine_alpha_bar",
    "cosine_betas",
    "ddim_sample",
    "ddpm_sample",
    "discretized_gaussian_log_likelihood",
    "dsm_loss",
    "dynamic_threshold",
    "eps_from_v",
    "eps_from_x0",
    "extract",
    "gaussian_blur",
    "geometric_sigmas",
    "gradient_guidance",
    "hybrid_loss",
    "learned_range_log_variance",
    "linear_betas",
    "network_in_precision",
    "noise_augment",
    "normal_kl",
    "p2_weights",
    "p_mean_variance",
    "predict_x0_eps",
    "q_posterior",
    "q_sample",
    "shift_alpha_bar",
    "simple_loss",
    "split_learned_variance",
    "static_threshold",
    "v_from_x0_eps",
    "vlb_terms",
    "x0_from_eps",
    "x0_from_v",
]
