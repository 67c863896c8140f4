"""The training engine, which knows no model: the loop (``loop.fit``, ``loop.predict``), the optimiser set-up
(``optim``), mixed precision (``precision``), stage checkpoints and markers (``stage``), run folders (``rundir``)
and logs (``logs``).  It trains any :class:`mlc.modeling.method.Method` with a ``TrainParams`` recipe."""
