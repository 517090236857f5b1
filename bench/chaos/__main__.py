"""`python -m bench.chaos [--quick] [--only ...] [--out-dir DIR]`: see bench/chaos/run.py."""

import sys

from bench.chaos.run import main

sys.exit(main())
