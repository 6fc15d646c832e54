"""The web viewer behind ``view.py``: see a model and its segmentation, prompt it on a photo, export.

Layers: :mod:`viewer.geometry` (pure numpy: camera poses, where a photo is drawn in 3D, screen rays and the
image file's pixels), :mod:`viewer.scene_data` (Gaussians -> splat arrays, segmentation folders, colours),
:mod:`viewer.session` (prompt state -> the ``SegmentConfig`` segment.py builds, runs, export through
utils.outputs), and :mod:`viewer.app`, the only module that imports viser (an optional dependency:
``pip install -e ".[viewer]"``). The package sits above the jobs: it calls segmentation's public pipeline,
nothing imports it.
"""
