"""The controller with exactly the minimal Azure roles of deploy/azure-roles/, read from
the role files and assigned per key, secret and certificate as docs/azure-roles.md
says, the emulator enforcing them (Azure RBAC data actions): every mode works with
its role, and each data action taken away in turn leaves a condition naming it.

One controller serves every case at once: the controller's identity holds a
different set of assignments on each issuer's objects, as one identity serving
several CAs would.
"""

from __future__ import annotations

import datetime as dt
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from akv_issuer.pki import default_algorithm
from support.azure_roles import assignment, assignments_without
from support.controller_harness import CA, Env, condition, csr_pem, wait_for
from support.emulator import import_certificate

KV = "Microsoft.KeyVault/vaults/"
SIGNER = "issuer-key-signer.json"
READER = "issuer-ca-secret-reader.json"
RENEWER = "issuer-ca-secret-renewer.json"
CERT_READER = "issuer-ca-certificate-reader.json"


async def _certificate_ca(env: Env) -> CA:
    """A CA imported as a Key Vault certificate object (key, secret and certificate of
    one name), for caSource.keyVaultCertificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Certificate-object CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    bundle = pem + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    name = f"cert-{uuid.uuid4().hex[:10]}"
    await import_certificate(env.emulator, env.emulator.env.vault_url, name, bundle)
    return CA(name=name, key_version="", pem=pem, cert=cert, algorithm=default_algorithm(
        key.public_key()))  # fmt: skip


async def _issue(env: Env, issuer: str, ca: CA) -> None:
    await env.create_request(f"cr-{issuer}", csr_pem(), issuer)
    await env.approve(f"cr-{issuer}")
    done = await env.wait_request(f"cr-{issuer}", "Issued")
    env.openssl_verify(done, ca)


async def _forbidden_naming(env: Env, issuer: str, action: str) -> str:
    obj = await env.wait_issuer(issuer, "False", "Forbidden")
    ready = condition(obj, "Ready")
    assert ready is not None
    message = str(ready["message"])
    assert f"the identity lacks the data action {action}" in message, message
    assert "ForbiddenByRbac" in message
    assert "docs/azure-roles.md" in message
    assert len(message.splitlines()) == 1, message
    return message


async def test_the_minimal_roles_suffice_and_each_missing_data_action_is_named(env: Env) -> None:
    wi = env.emulator.env.workload_client_id
    grants: list[dict[str, object]] = []
    due = {"automatic": True, "renewBefore": "1h", "lifetime": "3h"}

    # -- every mode with exactly its roles --------------------------------------
    secret_ca = await env.make_ca("EC", curve="P-256")
    grants += [assignment(SIGNER, f"/keys/{secret_ca.name}")]
    grants += [assignment(READER, f"/secrets/{secret_ca.name}")]
    await env.create_issuer("minimal", env.issuer_spec(secret_ca))

    # The newest key version has no CA yet: listing the versions needs keys/read only.
    rotated = await env.make_ca("EC", curve="P-256")
    await env.kv.create_key(
        env.emulator.env.vault_url, rotated.name, env.kv_auth, kty="EC", curve="P-256"
    )
    grants += [assignment(SIGNER, f"/keys/{rotated.name}")]
    grants += [assignment(READER, f"/secrets/{rotated.name}")]
    await env.create_issuer("minimal-rotated", env.issuer_spec(rotated))

    renewing = await env.make_ca("EC", curve="P-256", lifetime=dt.timedelta(hours=1))
    grants += [assignment(SIGNER, f"/keys/{renewing.name}")]
    grants += [assignment(RENEWER, f"/secrets/{renewing.name}")]
    await env.create_issuer("minimal-renewal", env.issuer_spec(renewing, caRenewal=due))

    cert_ca = await _certificate_ca(env)
    grants += [assignment(SIGNER, f"/keys/{cert_ca.name}")]
    grants += [assignment(CERT_READER, f"/certificates/{cert_ca.name}")]
    source = {"keyVaultCertificate": {"name": cert_ca.name}}
    await env.create_issuer("minimal-certificate", env.issuer_spec(cert_ca, caSource=source))

    # -- each data action taken away in turn ------------------------------------
    cases: list[tuple[str, str, str, str]] = [
        # (issuer, role missing an action, the action, the other role)
        ("no-key-read", SIGNER, "keys/read", READER),
        ("no-sign", SIGNER, "keys/sign/action", READER),
        ("no-get-secret", READER, "secrets/getSecret/action", SIGNER),
        ("no-renewer-get", RENEWER, "secrets/getSecret/action", SIGNER),
        ("no-set-secret", RENEWER, "secrets/setSecret/action", SIGNER),
        ("no-certificate-read", CERT_READER, "certificates/read", SIGNER),
    ]
    cas: dict[str, CA] = {}
    for issuer, role, action, other in cases:
        renewal = role == RENEWER
        ca = (
            await _certificate_ca(env)
            if role == CERT_READER
            else await env.make_ca(
                "EC", curve="P-256", lifetime=dt.timedelta(hours=1 if renewal else 24 * 365)
            )
        )
        cas[issuer] = ca
        scope = {SIGNER: "keys", READER: "secrets", RENEWER: "secrets", CERT_READER: "certificates"}
        grants += assignments_without(role, f"/{scope[role]}/{ca.name}", KV + action)
        grants += [assignment(other, f"/{scope[other]}/{ca.name}")]
        spec = env.issuer_spec(ca)
        if renewal:
            spec["caRenewal"] = due
        if role == CERT_READER:
            spec["caSource"] = {"keyVaultCertificate": {"name": ca.name}}
        await env.create_issuer(issuer, spec)

    env.emulator.admin.set_role_assignments(wi, grants)
    controller = env.start_controller()
    await env.wait_ready(controller)

    await env.wait_issuer("minimal", "True", "Checked")
    await _issue(env, "minimal", secret_ca)
    pending = await env.wait_issuer("minimal-rotated", "True", "Checked")
    assert condition(pending, "KeyVersionPending")["status"] == "True"  # type: ignore[index]
    await _issue(env, "minimal-rotated", rotated)
    await env.wait_event("minimal-renewal", "CARenewed", type_="Normal")
    await env.wait_issuer("minimal-certificate", "True", "Checked")
    await _issue(env, "minimal-certificate", cert_ca)

    await _forbidden_naming(env, "no-key-read", KV + "keys/read")
    await _forbidden_naming(env, "no-get-secret", KV + "secrets/getSecret/action")
    await _forbidden_naming(env, "no-renewer-get", KV + "secrets/getSecret/action")
    await _forbidden_naming(env, "no-certificate-read", KV + "certificates/read")
    # The check does not sign: the issuer is Ready until a request is signed.
    await env.wait_issuer("no-sign", "True", "Checked")
    await env.create_request("cr-no-sign", csr_pem(), "no-sign")
    await env.approve("cr-no-sign")
    await _forbidden_naming(env, "no-sign", KV + "keys/sign/action")
    await env.wait_request("cr-no-sign", "Pending", message="IssuerNotReady")
    # A renewal that cannot store the renewed root never un-Readies the issuer: its
    # CARenewalDue condition names what is missing.
    found: dict[str, object] = {}

    async def renewal_reported() -> bool:
        obj = await env.get_issuer("no-set-secret")
        due_condition = condition(obj, "CARenewalDue")
        found["condition"] = due_condition
        return due_condition is not None and due_condition["status"] == "True"

    await wait_for(renewal_reported, what="no-set-secret CARenewalDue=True", env=env)
    message = str(found["condition"]["message"])  # type: ignore[index]
    assert f"missing permission: {KV}secrets/setSecret/action" in message, message
    await env.wait_issuer("no-set-secret", "True", "Checked")
    # The emulator refused exactly what was taken away, and nothing of the full roles.
    responses = env.emulator.admin.responses()
    assert responses["sign"].get("403", 0) >= 1, responses["sign"]
    assert responses["set_secret"].get("403", 0) >= 1, responses["set_secret"]
    assert responses["get_certificate"].get("403", 0) >= 1, responses["get_certificate"]
