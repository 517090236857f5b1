"""``python -m akv_issuer.controller``: the same as ``akv-issuer controller``."""

import sys

from akv_issuer.cli.controller import main

if __name__ == "__main__":
    sys.exit(main())
