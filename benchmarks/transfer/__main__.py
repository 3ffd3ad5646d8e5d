"""`uv run python -m benchmarks.transfer ...`: the transfer benchmark (see the package doc)."""

import os
import sys

from benchmarks.transfer.cli import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
sys.exit(main())
