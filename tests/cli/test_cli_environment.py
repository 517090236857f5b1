"""What the CLI's entry points set up before they import anything else: aiohttp's
signal and middleware lists (frozenlist) in pure Python, so that the controller
process does not load the C++ runtime for them (docs/benchmarks.md, idle memory),
unless the environment says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = """
import sys
import {entry}
import akv_issuer.controller.app.manager
import frozenlist
maps = open("/proc/self/maps").read()
print(frozenlist.FrozenList is frozenlist.PyFrozenList, "libstdc++" in maps)
"""


def run_check(entry: str, **environ: str) -> tuple[bool, bool]:
    env = {k: v for k, v in os.environ.items() if k != "FROZENLIST_NO_EXTENSIONS"}
    env.update(environ)
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(entry=entry)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    pure, cpp = done.stdout.split()
    return pure == "True", cpp == "True"


@pytest.mark.parametrize("entry", ["akv_issuer.cli.main", "akv_issuer.cli.controller"])
def test_the_entry_points_keep_the_cpp_runtime_out(entry: str) -> None:
    pure, cpp = run_check(entry)
    assert pure, "frozenlist's compiled FrozenList was loaded"
    assert not cpp, "libstdc++ is loaded: some other module needs the C++ runtime now"


def test_an_explicit_environment_value_wins() -> None:
    pure, _ = run_check("akv_issuer.cli.main", FROZENLIST_NO_EXTENSIONS="")
    assert not pure
