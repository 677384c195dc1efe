"""``python -m relay ...`` = ``outbox relay ...``."""

from __future__ import annotations

import sys

from outbox.cli import main

if __name__ == "__main__":
    sys.exit(main(["relay", *sys.argv[1:]]))
