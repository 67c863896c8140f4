"""Models: the registry, the backbones, the five methods and the backbone + linear head baseline.

Importing this package imports every model module, which registers itself in
:mod:`mlc.models.registry` (timm's direction: the registry imports no model).
"""
from . import linear, mkt, q2l, qks, salgl, sgre  # noqa: F401  (each registers its model)
from .registry import create_model, list_models, model_entry  # noqa: F401
