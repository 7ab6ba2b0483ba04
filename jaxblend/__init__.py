"""jaxblend: Deep Image Blending (Zhang, Wen, Shi, WACV 2020) and Poisson image editing in JAX.

The public surface:

* :func:`blend` — two-stage deep blend of a source object into a target image;
* :func:`blend_batch` — many jobs, stacked per canvas shape, ``vmap``-ped and sharded;
* :func:`poisson_blend` — classical Poisson image editing (normal and mixed cloning);
* :func:`load_vgg` — the Flax VGG16/VGG19 feature extractor with ImageNet weights;
* :class:`BlendConfig`, :class:`StageConfig` — frozen settings;
* :func:`enable_compilation_cache` — keep compiled programs on disk between processes;
* :func:`place` — lay a job out on the canvas (``mask=None``: an RGBA source's alpha);
* :mod:`jaxblend.masks` — make masks (alpha, plain background, GrabCut) and previews;
* :mod:`jaxblend.losses` — the loss terms as pure functions.
"""

from jaxblend import losses as losses
from jaxblend import masks as masks
from jaxblend.batch import blend_batch as blend_batch
from jaxblend.blend import BlendResult as BlendResult
from jaxblend.blend import blend as blend
from jaxblend.blend import blend_job as blend_job
from jaxblend.compile_cache import enable_compilation_cache as enable_compilation_cache
from jaxblend.config import BlendConfig as BlendConfig
from jaxblend.config import StageConfig as StageConfig
from jaxblend.errors import InputError as InputError
from jaxblend.errors import JaxblendError as JaxblendError
from jaxblend.errors import WeightError as WeightError
from jaxblend.io import place as place
from jaxblend.poisson import poisson_blend as poisson_blend
from jaxblend.vgg import load_vgg as load_vgg

__version__ = "0.1.0"

__all__ = [
    "BlendConfig",
    "BlendResult",
    "InputError",
    "JaxblendError",
    "StageConfig",
    "WeightError",
    "blend",
    "blend_batch",
    "blend_job",
    "enable_compilation_cache",
    "poisson_blend",
    "load_vgg",
    "losses",
    "masks",
    "place",
]
