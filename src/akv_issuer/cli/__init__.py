"""`akv-issuer`: a thin command-line shell over the pki and keyvault layers.

Set here, before any entry point (``akv-issuer``, ``python -m
akv_issuer.controller``) imports aiohttp: aiohttp's signal and middleware lists
(frozenlist) in pure Python. frozenlist's compiled form is the only module of
the controller that loads the C++ runtime (libstdc++), 1.0-1.1 MiB of the idle
controller's 75.7 (``python -m bench.idle 2 rss fl:FROZENLIST_NO_EXTENSIONS=1``:
75.7, 75.7 -> 74.6, 74.7 MiB), for lists that are walked once per served
response and hold no entries here. A value set in the environment wins
(an empty one turns the compiled form back on).
"""

import os

os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")
