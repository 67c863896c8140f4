"""mlc-kit: five multi-label classification methods, their data, training, evaluation and figures.

``mlc.load_model(params_file, method=None, checkpoint=None, device="cpu")`` is the one way to a model: a
finished run's best checkpoint, a kit checkpoint file, or the authors' released weights
(:mod:`mlc.runs.checkpoints`).

The package is layered; each layer imports only those above it in this list (``tests/test_structure.py``):

    core        files, safe loading, progress, distributed helpers, suggestions, the registries
    metrics     mAP, F1 and the zero-shot protocols, on score and target arrays
    data        manifests, datasets, transforms, samplers, the toy world, dataset converters
    config      the params dataclasses and their YAML loader
    modeling    backbones, layers, losses, converters, ``Method``, CLIP and label embeddings
    engine      the training loop, optimiser and precision set-up, checkpoints and run folders
    runs        from params to data, a built or trained method, released weights, the toy CLIP
    notebook    figures, notebook set-up, walkthroughs, the papermill pipeline
    evaluation  evaluating runs, open-vocabulary evaluation, paper claims, reports, predictions, maps
    methods     one folder per method: its model, training wiring, official format, claim and figures
    cli         every command (``mlc``, ``python -m mlc.<entry>``); nothing imports it

The registries (:mod:`mlc.core.registry`) import no plug-in: the packages named below register theirs when
the first lookup imports them.
"""
from mlc.core import registry as _registry

_registry.add_plugin_packages("mlc.modeling", "mlc.methods")


def __getattr__(name):
    # PEP 562: ``mlc.load_model`` without importing torch at ``import mlc`` (the command line stays quick)
    if name in ("load_model", "load"):
        import importlib
        return getattr(importlib.import_module("mlc.runs.checkpoints"), name)
    raise AttributeError(f"module 'mlc' has no attribute {name!r}")
