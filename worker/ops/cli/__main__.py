"""`python -m worker.ops.cli`: the same as the `entity-sync` command."""

import sys

from worker.ops.cli import main

sys.exit(main())
