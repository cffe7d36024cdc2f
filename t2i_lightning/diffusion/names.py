"""The names and defaults of the diffusion settings a user chooses, without torch: ``t2i``'s parsers offer
them as choices and defaults before anything heavy is imported (the package's ``__init__`` loads the
pure-torch modules only when one of their names is used).

The modules that act on them import them from here, except the two tables that map a name to a
function: :data:`~t2i_lightning.diffusion.samplers.SAMPLERS` and
:data:`~t2i_lightning.diffusion.guidance.GUIDANCE_SCHEDULES`, whose keys must be the names below (tested).
"""

from __future__ import annotations

SAMPLER_NAMES = ("ddpm", "ddim")
"""The diffusion samplers: the keys of ``SAMPLERS``, every command's ``--sampler`` choices."""
GUIDANCE_SCHEDULE_NAMES = ("constant", "linear", "inverse")
"""How captioner guidance's lambda varies over the noise levels: the keys of ``GUIDANCE_SCHEDULES``."""
DEFAULT_CFG_SCALE = 3.0
"""The classifier-free guidance scale every command, grid and evaluation row uses unless told otherwise."""
SAMPLING_PRECISIONS = ("32-true", "bf16-mixed")
"""The precisions a sampler's network runs in (:func:`~t2i_lightning.diffusion.network_precision.network_in_precision`)."""
