"""Gradient-voting segmentation of Gaussian scenes from 2D masks (library behind segment.py)."""
