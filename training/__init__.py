"""3DGS training as a library: the loop (``trainer.train``) over a typed config, presets and checkpoints.

The top-level ``train.py`` only parses flags into a :class:`training.config.TrainConfig` and calls
:func:`training.trainer.train`; ``render.py`` and ``metrics.py`` use :mod:`training.evaluation`.
"""
