"""From params to results, for every method alike: the run's data, a method built or loaded, training,
checkpoints and released weights, the weights a run needs, the toy CLIP and the label-embedding tables."""
