"""Write the activation server's OpenAPI document to a file (or stdout), without starting it.

    python neuron_viewer/scripts/dump_openapi.py [OUT.json]

`create_app(None)` is the no-model app: same routes and schemas, no weights loaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from neuron_explainer.activation_server.main import create_app


def main(argv: list[str]) -> None:
    document = create_app(None).openapi()
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if len(argv) > 1:
        Path(argv[1]).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv)
