"""What models are built from: backbones, layers, losses, converters of official state dicts, ``Method``, CLIP
and label embeddings.  Importing the package registers the backbones and the losses (:mod:`mlc.core.registry`)."""
from mlc.modeling import backbones, losses  # noqa: F401  (each registers what it defines)
