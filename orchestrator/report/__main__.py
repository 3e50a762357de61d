"""`python -m orchestrator.report DIR [--out PATH]` (the same as `python -m orchestrator report`)."""

import sys

from orchestrator.report import main

sys.exit(main())
