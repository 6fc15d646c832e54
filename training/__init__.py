"""3DGS training as a library: the loop (``trainer.run_train``) over a typed config, presets and checkpoints.

The top-level ``train.py`` only parses flags into a :class:`training.config.TrainConfig` and calls
:func:`training.trainer.run_train`; ``render.py`` and ``metrics.py`` use :mod:`training.evaluation`.
"""
