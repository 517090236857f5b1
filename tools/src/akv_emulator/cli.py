"""`akv-emulator`: run the Key Vault emulator."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from .rules import PERMISSION_MODELS, SettingsError, VaultSettings, parse_settings
from .server import EmulatorConfig, request_shutdown, serve
from .state import DEFAULT_TENANT_ID, AdminInputError, parse_faults


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="akv-emulator",
        description="A local Azure Key Vault + Entra ID token endpoint emulator (HTTPS).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "serve", help="serve until SIGTERM/SIGINT; writes STATE_DIR/env when ready"
    )
    run.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    run.add_argument("--state-dir", type=Path, required=True, help="TLS files, token file, env")
    run.add_argument("--tenant-id", default=DEFAULT_TENANT_ID)
    run.add_argument("--token-lifetime", type=int, default=3600, help="access token seconds")
    run.add_argument(
        "--env-auth",
        choices=("workload", "secret"),
        default="workload",
        help="which identity the AZURE_* variables in the env file describe",
    )
    run.add_argument(
        "--challenge-resource",
        help="force the challenge resource (default: the vault host's parent domain)",
    )
    run.add_argument("--tls-name", action="append", default=[], help="extra DNS/IP SAN")
    run.add_argument(
        "--managed-hsm",
        action="store_true",
        help="play a Managed HSM on every host name: keys only, the secrets and "
        "certificates APIs answer 404 (hosts with '.managedhsm.' are one anyway)",
    )
    run.add_argument(
        "--proxy",
        action="store_true",
        help="also serve a CONNECT proxy that tunnels the --tls-name DNS names to this "
        "emulator (AKV_EMULATOR_PROXY_URL in the env file): cloud host names without /etc/hosts",
    )
    vault = run.add_argument_group("the vault (also settable at runtime under /_emulator/vault)")
    vault.add_argument(
        "--api-versions",
        help="comma-separated api-versions to serve (default: every stable one), e.g. "
        "'2016-10-01,7.0' for a vault that lags behind like Azure Stack Hub",
    )
    vault.add_argument(
        "--permission-model",
        choices=PERMISSION_MODELS,
        default="rbac",
        help="403 inner code of a missing permission: ForbiddenByRbac or AccessDenied",
    )
    vault.add_argument(
        "--firewall",
        action="store_true",
        help="refuse every authenticated call with 403 ForbiddenByFirewall",
    )
    faults = run.add_argument_group("faults (also settable at runtime under /_emulator/faults)")
    faults.add_argument("--latency-ms", type=float, default=0.0)
    faults.add_argument("--throttle-next", type=int, default=0, help="429 the next N requests")
    faults.add_argument("--throttle-probability", type=float, default=0.0)
    faults.add_argument(
        "--throttle-retry-after", type=float, help="Retry-After seconds (omitted by default)"
    )
    faults.add_argument(
        "--throttle-preset",
        choices=("azure",),
        help="enforce Key Vault's published per-10 s limits (one weighted window per vault; "
        "signs and key reads; docs/emulator.md)",
    )
    faults.add_argument("--error-next", type=int, default=0, help="5xx the next N requests")
    faults.add_argument("--error-probability", type=float, default=0.0)
    faults.add_argument("--error-status", type=int, default=503)
    faults.add_argument("--stall-next", type=int, default=0, help="never answer the next N")
    faults.add_argument("--stall-probability", type=float, default=0.0)
    faults.add_argument("--faults-json", help="a full fault configuration as JSON")
    parser.add_argument("--log-level", default="INFO")
    return parser


def _faults(args: argparse.Namespace) -> object:
    if args.faults_json:
        return json.loads(args.faults_json)
    return {
        "latency_ms": args.latency_ms,
        "throttle": {
            "next": args.throttle_next,
            "probability": args.throttle_probability,
            "retry_after": args.throttle_retry_after,
            "preset": args.throttle_preset,
        },
        "errors": {
            "next": args.error_next,
            "probability": args.error_probability,
            "status": args.error_status,
        },
        "stall": {"next": args.stall_next, "probability": args.stall_probability},
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        faults = parse_faults(_faults(args))
    except (AdminInputError, json.JSONDecodeError) as exc:
        print(f"akv-emulator: invalid fault settings: {exc}", file=sys.stderr)
        return 2
    settings: dict[str, object] = {
        "permission_model": args.permission_model,
        "firewall": args.firewall,
    }
    if args.api_versions:
        settings["api_versions"] = [v.strip() for v in args.api_versions.split(",") if v.strip()]
    try:
        vault = parse_settings(settings, VaultSettings())
    except SettingsError as exc:
        print(f"akv-emulator: invalid vault settings: {exc}", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"akv-emulator: invalid port {args.port}", file=sys.stderr)
        return 2
    config = EmulatorConfig(
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
        tenant_id=args.tenant_id,
        token_lifetime=args.token_lifetime,
        challenge_resource=args.challenge_resource,
        env_auth=args.env_auth,
        tls_names=args.tls_name,
        faults=faults,
        managed_hsm=args.managed_hsm,
        proxy=args.proxy,
        vault=vault,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, request_shutdown)
        await serve(config)

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"akv-emulator: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
