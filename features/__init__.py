"""The comparison baseline: a per-Gaussian feature field distilled from 2D feature maps, then clustered.

Three stages, one module each (scripts at the top level stay thin):

* :mod:`features.extractors` — dense per-image features (``features.pt``): DINO / DINOv2 ViTs from a LOCAL
  weights file only, or the weight-free ``classic`` stand-in (Lab colour + HOG-like gradient histograms; not
  DINO).
* :mod:`features.field` — per-Gaussian feature vectors trained on frozen geometry so that rendered feature
  maps match the 2D ones (``gaussian_features.pt``).
* :mod:`features.clustering` — KMeans on [features, position], cluster PLYs and renders, and selection of
  clusters by a 2D mask in the same ``labels.npy`` format as ``segment.py``.

Importing this package imports neither timm nor torch.hub models nor any native code.
"""
