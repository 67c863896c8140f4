"""The training engine, which knows no model: the loop (``loop.fit``), optimiser and precision set-up, stage
checkpoints (``stage``), run folders (``rundir``) and logs (``logs``)."""
