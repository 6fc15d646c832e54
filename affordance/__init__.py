"""Few-shot affordance transfer: a few annotated 2D images -> every training view -> per-Gaussian labels.

Three stages, one module each (``affordance.py`` and ``eval_affordance.py`` at the top only parse flags):

* :mod:`affordance.annotations` — the annotated source images (labelme JSON with polygons or base64 masks,
  integer label PNGs, UMD ``*_label.mat``) read into integer label maps over a class list
  (:mod:`affordance.classes`, default the UMD part-affordance classes).
* :mod:`affordance.transfer` — 2D -> 2D: dense features (``features.extractors``: the weight-free
  ``classic`` stand-in or DINO / DINOv2 from a local weights file) of the annotated pixels, subsampled per
  class, label every pixel of a target view by a cosine k-nearest-neighbour majority vote.
* :mod:`affordance.pipeline` — 2D -> 3D: the transferred label maps of the training views are voted onto the
  Gaussians with the engine's vote kernel (``segmentation.voting``), then written as labels.npy, coloured
  PLYs and renders. :mod:`affordance.evaluate` scores 2D label maps and rendered 3D labellings (per-class IoU
  and recall) against ground truth.

Importing this package imports no native code, no timm and no faiss.
"""
