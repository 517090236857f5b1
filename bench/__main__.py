"""`python -m bench [--quick] [--out-dir DIR]`: see bench/run.py."""

import sys

from bench.run import main

sys.exit(main())
