"""``python -m embedserve`` runs the CLI."""

from __future__ import annotations

import sys

from embedserve.cli import main

sys.exit(main())
