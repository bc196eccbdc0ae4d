"""``python -m embedserve`` runs the CLI."""

from __future__ import annotations

import sys

from embedserve.cli import main

# Guarded: body-decoding worker processes (spawned) import this module as ``__mp_main__`` and must not run the CLI.
if __name__ == "__main__":
    sys.exit(main())
