"""Numbers from scores and targets: mAP, F1, per-class AP (``multilabel``) and the zero-shot protocols (``zsl``)."""
