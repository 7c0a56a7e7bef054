"""Start the activation server with the built viewer mounted (what the e2e tests talk to).

    python neuron_viewer/e2e/serve.py --model-path FOLDER --port N [--viewer-dist DIST] [server flags]

Takes the server's own flags (`python -m neuron_explainer.activation_server --help`) plus
`--viewer-dist` (default: neuron_viewer/dist), and serves the viewer with `static.mount_viewer`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from neuron_explainer.activation_server.main import build_debugger, create_app, parse_args
from neuron_explainer.activation_server.static import DEFAULT_DIST, mount_viewer


def main(argv: list[str]) -> None:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--viewer-dist", type=Path, default=DEFAULT_DIST)
    ours, rest = extra.parse_known_args(argv)
    args = parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    app = create_app(None if args.no_model else build_debugger(args))
    if not mount_viewer(app, ours.viewer_dist):
        sys.exit(f"error: no viewer build at {ours.viewer_dist}: run `npm run build` in neuron_viewer")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
