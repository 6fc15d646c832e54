#!/usr/bin/env python
"""See a trained model and its segmentation in the browser, prompt it on a photo, export the result.

    python view.py -m MODEL                                   # the photos' colours name the object (GrabCut)
    python view.py -m MODEL --masks SAM_DIR --out OUT         # a click picks a SAM proposal, Export writes OUT
    python view.py -m MODEL --segmentation MODEL/segmentation # show an existing segment.py result

Serves a local page (http://localhost:8080; from another machine: ssh -L 8080:localhost:8080 HOST). The page
shows the full scene, the extracted or deleted part, or label colours, and the training cameras. Pick a
view: its photo is shown in front of its camera; click the object (Ctrl+click: not the object; Shift+drag: a
box), then Segment runs segment.py's prompt and association code, and Export writes the files that
`segment.py -m MODEL [--masks SAM_DIR] --prompt VIEW:X,Y --out OUT` writes. Needs viser: pip install -e ".[viewer]".
"""
from __future__ import annotations

import argparse
import sys
import time

from segmentation.cli import add_compute_args, add_view_args
from utils.errors import ArgumentParser, cli_main
from utils.outputs import add_force_flag


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="view.py", description=__doc__.split("\n\n")[0].strip())
    p.add_argument("-m", "--model_path", "--model", required=True,
                   help="trained model: Inria folder, splatfacto run folder or export PLY, or gsplat ckpt_*.pt")
    add_view_args(p)
    p.add_argument("--segmentation", default="", metavar="DIR",
                   help="a segment.py output folder to show (labels.npy; labels or instance ids)")
    p.add_argument("--masks", default="", metavar="SAM_DIR",
                   help="SAM automatic-mask output (<image>/<k>.png folders): a click picks the proposal under it "
                        "(segment.py --masks); default: the object is cut out of the photo")
    p.add_argument("--out", default="", help="where Export writes segment.py's files (default MODEL/segmentation)")
    add_force_flag(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; the next free one if taken)")
    add_compute_args(p)
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from segmentation.cli import check_compute
    from viewer.app import ViewerApp, require_viser
    from viewer.session import Session, ViewerConfig

    args = build_parser().parse_args(argv)
    require_viser()           # before loading anything: a missing optional dependency is one line
    check_compute(args.backend, args.device)
    cfg = ViewerConfig(model_path=args.model_path, segmentation=args.segmentation, masks=args.masks, out=args.out,
                       force=args.force, iteration=args.iteration, source_path=args.source_path, images=args.images,
                       resolution=args.resolution, backend=args.backend, num_threads=args.num_threads,
                       device=args.device, host=args.host, port=args.port)
    session = Session(cfg)
    try:
        app = ViewerApp(session, cfg.host, cfg.port)
        print(f"view.py: open {app.url} in a browser (over SSH: ssh -L {app.server.get_port()}:localhost:"
              f"{app.server.get_port()} THIS_HOST, then the same URL); Ctrl+C stops", flush=True)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:  # Ctrl+C is how the viewer stops: not an error
            print("view.py: stopped (the scratch folder of its runs is removed; exported files stay)")
        finally:
            app.stop()
    finally:
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
