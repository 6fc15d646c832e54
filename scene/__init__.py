"""Scene loading (COLMAP, LLFF, NeRF-synthetic), cameras and the Gaussian model."""
