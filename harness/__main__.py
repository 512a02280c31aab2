"""``python -m harness sandbox ...`` / ``python -m harness demo``."""

import sys

from harness.cli import main

sys.exit(main())
