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

from utils.errors import cli_main
from viewer.session import ViewerConfig


def build_parser() -> argparse.ArgumentParser:
    from arguments import config_parser

    return config_parser(ViewerConfig, prog="view.py", description=__doc__.split("\n\n")[0].strip())


@cli_main
def main(argv: list[str] | None = None) -> int:
    from arguments import parse_config
    from scene.compute import check_compute
    from viewer.app import ViewerApp, require_viser
    from viewer.session import Session

    cfg, _ = parse_config(build_parser(), argv)
    require_viser()           # before loading anything: a missing optional dependency is one line
    check_compute(cfg.backend, cfg.device)
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
