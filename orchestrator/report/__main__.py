"""`python -m orchestrator.report DIR [--out PATH]` (the same as `python -m orchestrator report`)."""

import sys

from orchestrator.cli import main

sys.exit(main(["report", *sys.argv[1:]]))
