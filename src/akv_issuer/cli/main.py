"""Entry point of ``akv-issuer``: argument parsing and error-to-exit-code mapping.

Every expected failure (bad input, Key Vault refusing, a CA that does not fit
its key) becomes one ``akv-issuer: error: ...`` line and exit code 1; argparse
usage errors exit 2. A traceback means a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from akv_issuer.cli import ca, check, controller, sign
from akv_issuer.cli.errors import CLIError
from akv_issuer.keyvault import Cause, KeyVaultError
from akv_issuer.pki import PKIError
from akv_issuer.runtime.buildinfo import build_info

PROG = "akv-issuer"


class _VersionAction(argparse.Action):
    """argparse's version action, reading the version only when asked (its
    metadata lookup would otherwise slow every command's start)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"{PROG} {build_info().describe()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "cert-manager external issuer signing with an Azure Key Vault key, "
            "and the tools to create and use its CA offline."
        ),
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version, the commit it was built from (when known) and exit",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    ca.register(subparsers)
    sign.register(subparsers)
    check.register(subparsers)
    controller.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The Azure SDK logs request details at INFO; a CLI user wants only our output.
    logging.getLogger("azure").setLevel(logging.WARNING)
    # azure-identity warns with Entra's whole answer (trace lines, the body) when a
    # credential fails; the CLI's one-line error already says what Entra refused.
    logging.getLogger("azure.identity").setLevel(logging.ERROR)
    try:
        result = args.handler(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except (CLIError, PKIError, KeyVaultError) as exc:
        hint = ""
        if isinstance(exc, KeyVaultError) and exc.cause is Cause.API_VERSION:
            hint = " (set AKV_KEYVAULT_API_VERSION to a version the vault supports)"
        elif isinstance(exc, KeyVaultError) and exc.missing_permission:
            hint = (
                f"; assign a role granting {exc.missing_permission} on it "
                f"(docs/azure-roles.md: ca-operator.json)"
                if exc.missing_permission.lower().startswith("microsoft.")
                else f"; add {exc.missing_permission!r} to the vault's access policy"
            )
        print(f"{PROG}: error: {exc}{hint}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"{PROG}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
