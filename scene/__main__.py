"""``python -m scene -s SOURCE``: load a scene folder and print what was found (a smoke test for a new capture)."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from arguments import ModelParams, config_parser, parse_config
from scene.dataset_readers import read_scene
from utils.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    return config_parser(ModelParams, prog="python -m scene", description=__doc__)


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    mp, _ = parse_config(parser, argv)
    if not mp.source_path:
        parser.error("-s/--source_path is required")
    info = read_scene(mp.source_path, mp.images, mp.resolution, mp.eval, mp.white_background)
    cams = info.train_cameras + info.test_cameras
    sizes = sorted({(c.width, c.height) for c in cams})
    print(f"scene      {info.source_path}  ({info.scene_type})")
    print(f"views      {len(info.train_cameras)} train, {len(info.test_cameras)} test")
    print(f"resolution {', '.join(f'{w}x{h}' for w, h in sizes[:4])}{' ...' if len(sizes) > 4 else ''}")
    print(f"focal      fx {np.mean([c.fx for c in cams]):.2f} px (mean)")
    distorted = sum(c.distortion is not None for c in cams)
    if distorted:
        print(f"distortion {distorted} views undistorted ({cams[0].distortion.model if cams[0].distortion else ''})")
    pts = info.point_cloud
    print(f"points     {len(pts.points) if pts is not None else 'none (train.py triangulates them or draws random ones)'}")
    lo, hi = info.bounds
    print(f"bounds     [{lo[0]:.2f} {lo[1]:.2f} {lo[2]:.2f}] .. [{hi[0]:.2f} {hi[1]:.2f} {hi[2]:.2f}]")
    print(f"extent     radius {info.nerf_normalization['radius']:.3f}")
    img = cams[0].load_image()
    print(f"first view {cams[0].image_name}: image {tuple(img.shape)} mean {img.mean().item():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
