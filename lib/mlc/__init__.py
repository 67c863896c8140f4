"""mlc-kit: five multi-label classification methods, their data, training, evaluation and figures.

``mlc.load_model(params_file, method=None, checkpoint=None, device="cpu")`` is the one way to a model: a
finished run's best checkpoint, a kit checkpoint file, or the authors' released weights (:mod:`mlc.checkpoints`).
"""


def __getattr__(name):
    if name in ("load_model", "load"):       # lazily: ``import mlc`` stays cheap
        from . import checkpoints
        return getattr(checkpoints, name)
    raise AttributeError(f"module 'mlc' has no attribute {name!r}")
