"""Start and stop an emulator in a subprocess; an admin client for faults, identities, counters.

Used by the pytest fixtures, the demo and the benchmark::

    with EmulatorProcess.start(tmp_dir) as emu:
        emu.admin.set_faults({"throttle": {"next": 1}})
        ... use emu.env.vault_url / emu.env.ca_file ...
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from azure.identity import ClientSecretCredential

from akv_issuer.keyvault import ClientSecret, KeyVaultAccess, KeyVaultOptions


class EmulatorError(RuntimeError):
    """The emulator could not be started, or an admin call was refused."""


def parse_env_file(path: Path) -> dict[str, str]:
    """Read the `KEY=value` lines (shell-quoted values) the emulator writes."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        if not sep:
            raise EmulatorError(f"{path}: not a KEY=value line: {line[:40]!r}")
        parts = shlex.split(raw)
        values[key.strip()] = parts[0] if parts else ""
    return values


@dataclass(frozen=True)
class EmulatorEnv:
    """The emulator's env file, parsed."""

    values: dict[str, str] = field(repr=False)

    @property
    def vault_url(self) -> str:
        return self.values["AKV_VAULT_URL"]

    @property
    def ca_file(self) -> str:
        return self.values["AKV_TLS_CA_FILE"]

    @property
    def admin_url(self) -> str:
        return self.values["AKV_EMULATOR_ADMIN_URL"]

    @property
    def authority_host(self) -> str:
        return self.values["AZURE_AUTHORITY_HOST"]

    @property
    def tenant_id(self) -> str:
        return self.values["AKV_EMULATOR_TENANT_ID"]

    @property
    def workload_client_id(self) -> str:
        return self.values["AKV_EMULATOR_WORKLOAD_CLIENT_ID"]

    @property
    def federated_token_file(self) -> str:
        return self.values["AKV_EMULATOR_FEDERATED_TOKEN_FILE"]

    @property
    def sp_client_id(self) -> str:
        return self.values["AKV_EMULATOR_SP_CLIENT_ID"]

    @property
    def sp_client_secret(self) -> str:
        return self.values["AKV_EMULATOR_SP_CLIENT_SECRET"]

    def service_principal_access(
        self, *, timeout: float = 30.0
    ) -> tuple[KeyVaultAccess, ClientSecret]:
        """A Key Vault access layer and the emulator's service principal, for a test
        or benchmark that sets up keys and CA secrets as an operator would."""
        access = KeyVaultAccess(KeyVaultOptions(tls_ca_file=self.ca_file, timeout=timeout))
        auth = ClientSecret(
            tenant_id=self.tenant_id,
            client_id=self.sp_client_id,
            secret=self.sp_client_secret,
            authority_host=self.authority_host,
        )
        return access, auth

    def sp_credential(
        self,
        *,
        tenant_id: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        **options: Any,
    ) -> ClientSecretCredential:
        """The service principal as a sync azure-identity credential, for tests that use
        the SDK's sync clients directly (MSAL would otherwise ask
        login.microsoftonline.com to vouch for the emulator's authority). The
        keywords replace its tenant, client or secret (tests of refusals);
        ``options`` go to the credential (say ``retry_total=0``)."""
        return ClientSecretCredential(
            tenant_id or self.tenant_id,
            client_id or self.sp_client_id,
            client_secret or self.sp_client_secret,
            authority=self.authority_host,
            connection_verify=self.ca_file,
            disable_instance_discovery=True,
            **options,
        )

    def azure_environ(self) -> dict[str, str]:
        """The AZURE_* and AKV_* variables, for a child process or monkeypatched os.environ."""
        return {k: v for k, v in self.values.items() if k.startswith(("AZURE_", "AKV_"))}


class AdminClient:
    """Blocking JSON client for /_emulator/ (the emulator runs in another process)."""

    def __init__(self, admin_url: str, ca_file: str, timeout: float = 10.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        self._context = ssl.create_default_context(cafile=ca_file)
        self._timeout = timeout
        # Credentials handed out through this client (generated client secrets,
        # minted assertions), so tests can check that no log ever shows one.
        self.handed_out: list[str] = []

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - https URL from the emulator's env file
            f"{self.admin_url}/{path.lstrip('/')}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, context=self._context, timeout=self._timeout
            ) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise EmulatorError(f"admin {method} {path}: HTTP {exc.code}: {detail}") from None

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "health")
        return result

    def counters(self) -> dict[str, int]:
        """Requests received per operation (sign, get_key, get_secret, token, challenge, ...)."""
        result: dict[str, int] = self.call("GET", "counters")["requests"]
        return result

    def responses(self) -> dict[str, dict[str, int]]:
        """Responses sent per operation and HTTP status."""
        result: dict[str, dict[str, int]] = self.call("GET", "counters")["responses"]
        return result

    def peak_in_flight(self) -> dict[str, int]:
        """The most calls served at once per operation since the counters were reset."""
        result: dict[str, int] = self.call("GET", "counters")["peak_in_flight"]
        return result

    def reset_counters(self) -> None:
        self.call("DELETE", "counters")

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "faults")
        return result

    def set_faults(self, faults: dict[str, Any]) -> dict[str, Any]:
        """Replace the whole fault configuration (see docs/emulator.md)."""
        result: dict[str, Any] = self.call("PUT", "faults", faults)
        return result

    def update_faults(self, faults: dict[str, Any]) -> dict[str, Any]:
        """Replace only the top-level fault sections given."""
        result: dict[str, Any] = self.call("PATCH", "faults", faults)
        return result

    def clear_faults(self) -> None:
        self.call("DELETE", "faults")

    def set_connection_faults(self, faults: dict[str, Any]) -> dict[str, Any]:
        """Replace the connection faults (``midbody``, ``reset``, ``hang_seconds``;
        see akv_emulator.faults)."""
        result: dict[str, Any] = self.call("PUT", "connection-faults", faults)
        return result

    def set_outage(self, down: dict[str, str]) -> dict[str, Any]:
        """Take vaults down by host name (``"*"``: every host): ``"reset"`` fails their
        connections, ``"503"`` answers ServiceUnavailable; ``{}`` brings them back."""
        result: dict[str, Any] = self.call("PUT", "outage", {"down": down})
        return result

    def sign_log(self) -> list[dict[str, Any]]:
        """Every sign carried out: digest, key (name/version), user_agent, delivered, at."""
        result: list[dict[str, Any]] = self.call("GET", "sign-log")
        return result

    def clear_sign_log(self) -> None:
        self.call("DELETE", "sign-log")

    def identities(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "identities")
        return result

    def set_identity(
        self,
        client_id: str,
        *,
        secret: str | bool | None = None,
        key_permissions: list[str] | None = None,
        secret_permissions: list[str] | None = None,
        federated_subject: str | None = None,
        federated_issuer: str | None = None,
        federated_audience: str | None = None,
    ) -> dict[str, Any]:
        """Create or update an identity; secret=True generates one (returned as "secret").

        A federated credential trusts ``federated_subject`` from ``federated_issuer``
        (default: the emulator's own issuer; another one must be trusted with
        :meth:`trust_issuer`, e.g. a cluster's service-account issuer) for
        ``federated_audience`` (default api://AzureADTokenExchange)."""
        body: dict[str, Any] = {}
        if secret is not None:
            body["secret"] = secret
        permissions: dict[str, list[str]] = {}
        if key_permissions is not None:
            permissions["keys"] = key_permissions
        if secret_permissions is not None:
            permissions["secrets"] = secret_permissions
        if permissions:
            body["permissions"] = permissions
        if federated_subject is not None:
            cred = {"subject": federated_subject}
            if federated_issuer is not None:
                cred["issuer"] = federated_issuer
            if federated_audience is not None:
                cred["audience"] = federated_audience
            body["federated"] = [cred]
        result: dict[str, Any] = self.call("PUT", f"identities/{client_id}", body)
        if isinstance(result.get("secret"), str):
            self.handed_out.append(result["secret"])
        if isinstance(secret, str):
            self.handed_out.append(secret)
        return result

    def set_role_assignments(
        self, client_id: str, assignments: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        """The identity's Azure RBAC role assignments (akv_emulator.rbac), replacing any it
        had: each ``{"scope": "/keys/<name>", "role_definition": <a role definition as
        az takes it>}`` or ``{"scope", "data_actions", "not_data_actions"?}``. From then
        on the identity may do only what they grant; None removes them (everything is
        allowed again, within its access-policy permissions)."""
        result: dict[str, Any] = self.call(
            "PUT", f"identities/{client_id}", {"role_assignments": assignments}
        )
        return result

    def delete_identity(self, client_id: str) -> None:
        self.call("DELETE", f"identities/{client_id}")

    def mint_assertion(self, client_id: str, *, lifetime: int = 3600) -> str:
        """A service-account-like JWT for the identity's federated subject."""
        result = self.call("POST", f"identities/{client_id}/assertion", {"lifetime": lifetime})
        self.handed_out.append(str(result["assertion"]))
        return str(result["assertion"])

    def trust_issuer(self, issuer: str, public_keys_pem: list[str]) -> None:
        self.call("PUT", "trusted-issuers", {"issuer": issuer, "public_keys_pem": public_keys_pem})

    def trust_issuer_by_discovery(
        self, issuer: str, *, discovery_url: str | None = None, ca_pem: str | None = None
    ) -> None:
        """Trust ``issuer`` as Entra ID does: the emulator reads its
        /.well-known/openid-configuration (from ``discovery_url`` when the issuer
        URL itself is not reachable from the emulator) and the JWKS it names,
        verifying TLS against ``ca_pem``; it re-reads the JWKS on an unknown key id."""
        body: dict[str, Any] = {"issuer": issuer}
        if discovery_url is not None:
            body["discovery_url"] = discovery_url
        if ca_pem is not None:
            body["ca_pem"] = ca_pem
        self.call("PUT", "trusted-issuers", body)

    def revoke_tokens(self) -> int:
        return int(self.call("POST", "tokens/revoke")["revoked"])

    def set_vault(
        self,
        *,
        permission_model: str | None = None,
        firewall: bool | None = None,
        api_versions: list[str] | None = None,
        key_attestation: bool | None = None,
    ) -> dict[str, Any]:
        """The vault's permission model ("rbac", "access_policy"), its firewall (True:
        refuse every authenticated call), the api-versions it serves and whether a
        Managed HSM serves key attestation."""
        body: dict[str, Any] = {}
        if permission_model is not None:
            body["permission_model"] = permission_model
        if firewall is not None:
            body["firewall"] = firewall
        if api_versions is not None:
            body["api_versions"] = api_versions
        if key_attestation is not None:
            body["key_attestation"] = key_attestation
        result: dict[str, Any] = self.call("PUT", "vault", body)
        return result

    def reset(self) -> None:
        """Start-up faults, empty counters, default identities and permissions, and the
        vault's default settings (RBAC, no firewall, every api-version)."""
        self.call("POST", "reset")

    def clear_data(self) -> None:
        self.call("DELETE", "data")

    def rotate_key(self, name: str) -> str:
        """Rotate a key as its rotation policy would (no caller, not counted); its new version."""
        return str(self.call("POST", f"keys/{name}/rotate")["version"])


class EmulatorProcess:
    """An `akv-emulator serve` child process."""

    def __init__(self, process: subprocess.Popen[bytes], state_dir: Path, env: EmulatorEnv) -> None:
        self.process = process
        self.state_dir = state_dir
        self.env = env
        self.admin = AdminClient(env.admin_url, env.ca_file)

    @classmethod
    def start(
        cls,
        state_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_args: list[str] | None = None,
        timeout: float = 30.0,
    ) -> EmulatorProcess:
        state = Path(state_dir).resolve()
        state.mkdir(parents=True, exist_ok=True)
        env_file = state / "env"
        env_file.unlink(missing_ok=True)
        log_file = state / "emulator.log"
        command = [
            sys.executable,
            "-m",
            "akv_emulator.cli",
            "serve",
            "--host",
            host,
            "--port",
            str(port),
            "--state-dir",
            str(state),
            *(extra_args or []),
        ]
        with log_file.open("ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while not env_file.exists():
            if process.poll() is not None:
                tail = log_file.read_text(errors="replace")[-2000:]
                raise EmulatorError(f"akv-emulator exited with {process.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise EmulatorError(f"akv-emulator did not become ready within {timeout:g} s")
            time.sleep(0.05)
        emulator = cls(process, state, EmulatorEnv(parse_env_file(env_file)))
        emulator.admin.health()
        return emulator

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def environ_with(env: EmulatorEnv) -> dict[str, str]:
    """os.environ plus the emulator's variables, for subprocesses that authenticate against it."""
    return {**os.environ, **env.azure_environ()}
