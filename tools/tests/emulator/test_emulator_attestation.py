"""Exportable keys, release policies and the Managed HSM mode's key attestation, through
the real Azure SDK (azure-keyvault-keys >= 4.11: ``exportable``, ``release_policy``,
``get_key_attestation``), and the HSM's own data action names.

Sources: keys.json 2025-07-01 (KeyAttributes.exportable: "Release policy must be
provided when creating the first version of an exportable key"; KeyReleasePolicy
contentType/data/immutable; GET /keys/{name}/{version}/attestation answering the key
bundle with attributes.attestation: certificatePemFile, privateKeyAttestation,
publicKeyAttestation base64url and a version); the Managed HSM local RBAC built-in
roles page (Microsoft.KeyVault/managedHsm/keys/read/action, .../sign/action).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient, KeyReleasePolicy
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from akv_emulator import attestation as att
from akv_emulator.testing import EmulatorEnv, EmulatorProcess
from support.azure_roles import assignment
from support.emulator import digest_for

POLICY = KeyReleasePolicy(
    json.dumps(
        {
            "version": "1.0.0",
            "anyOf": [
                {
                    "authority": "https://attest.example",
                    "allOf": [{"claim": "x-ms-attestation-type", "equals": "sevsnpvm"}],
                }
            ],
        }
    ).encode()
)
HSM_KV = "Microsoft.KeyVault/managedHsm/"


def _keys(env: EmulatorEnv, credential: Any = None) -> KeyClient:
    return KeyClient(
        env.vault_url, credential or env.sp_credential(), connection_verify=env.ca_file
    )


@pytest.fixture(scope="module")
def hsm_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """An emulator whose every host is a Managed HSM (``--managed-hsm``)."""
    process = EmulatorProcess.start(
        tmp_path_factory.mktemp("akv-hsm"), extra_args=["--managed-hsm"]
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def hsm(hsm_process: EmulatorProcess) -> Iterator[EmulatorProcess]:
    hsm_process.admin.reset()
    yield hsm_process
    hsm_process.admin.reset()


def test_an_exportable_key_needs_a_release_policy_and_reports_both(
    emulator_env: EmulatorEnv, unique_name: str
) -> None:
    client = _keys(emulator_env)
    with pytest.raises(HttpResponseError) as caught:
        client.create_rsa_key(unique_name, hardware_protected=True, exportable=True)
    assert caught.value.status_code == 400
    key = client.create_rsa_key(
        unique_name, hardware_protected=True, exportable=True, release_policy=POLICY
    )
    assert key.properties.exportable is True
    assert key.properties.release_policy is not None
    assert key.properties.release_policy.encoded_policy == POLICY.encoded_policy
    fetched = client.get_key(unique_name)
    assert fetched.properties.exportable is True
    assert fetched.properties.release_policy is not None
    # Rotation keeps both.
    rotated = client.rotate_key(unique_name)
    assert rotated.properties.exportable is True
    assert rotated.properties.release_policy is not None
    # An ordinary key is not exportable and has no policy.
    plain = client.create_ec_key(f"{unique_name}-plain")
    assert plain.properties.exportable is False
    assert plain.properties.release_policy is None
    # A release policy can be added to an existing key (update), and then it is there.
    updated = client.update_key_properties(f"{unique_name}-plain", release_policy=POLICY)
    assert updated.properties.release_policy is not None


def test_attestation_is_for_managed_hsm_keys_only(
    emulator_env: EmulatorEnv, unique_name: str
) -> None:
    client = _keys(emulator_env)
    client.create_rsa_key(unique_name, hardware_protected=True)
    with pytest.raises(HttpResponseError) as caught:
        client.get_key_attestation(unique_name)
    assert caught.value.status_code == 400


def _chain(pem_file: bytes) -> list[x509.Certificate]:
    certificates = x509.load_pem_x509_certificates(pem_file)
    assert len(certificates) == 2
    partition, root = certificates
    root.public_key().verify(  # type: ignore[union-attr]
        partition.signature,
        partition.tbs_certificate_bytes,
        padding.PKCS1v15(),
        partition.signature_hash_algorithm,  # type: ignore[arg-type]
    )
    assert root.subject == root.issuer
    return certificates


def _statement(blob: bytes, partition: x509.Certificate) -> dict[int, bytes]:
    body, signature = blob[: -att.SIGNATURE_LENGTH], blob[-att.SIGNATURE_LENGTH :]
    public_key = partition.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
    return att.read_statement(blob)


@pytest.mark.parametrize("kind", ["RSA-HSM", "EC-HSM"])
def test_a_managed_hsm_key_is_attested_as_generated_inside_and_never_extractable(
    hsm: EmulatorProcess, unique_name: str, kind: str
) -> None:
    client = _keys(hsm.env)
    if kind == "RSA-HSM":
        created = client.create_rsa_key(unique_name, hardware_protected=True, size=3072)
    else:
        created = client.create_ec_key(unique_name, hardware_protected=True, curve="P-384")
    assert created.properties.hsm_platform == "2"
    attested = client.get_key_attestation(unique_name, created.properties.version)
    assert attested.id == created.id
    found = attested.properties.attestation
    assert found is not None
    assert found.version == att.FORMAT_VERSION
    assert found.certificate_pem_file is not None
    assert found.private_key_attestation is not None
    assert found.public_key_attestation is not None
    partition, _ = _chain(found.certificate_pem_file)
    private = _statement(found.private_key_attestation, partition)
    public = _statement(found.public_key_attestation, partition)
    assert private[att.CKA_ID] == public[att.CKA_ID] == created.id.encode()  # type: ignore[union-attr]
    assert private[att.CKA_CLASS] == (att.CKO_PRIVATE_KEY).to_bytes(4, "big")
    assert private[att.CKA_LOCAL] == b"\x01"
    assert private[att.CKA_EXTRACTABLE] == b"\x00"
    assert private[att.CKA_NEVER_EXTRACTABLE] == b"\x01"
    # The attested public key is the key's.
    key = created.key
    if kind == "RSA-HSM":
        assert int.from_bytes(public[att.CKA_MODULUS], "big") == int.from_bytes(key.n, "big")  # type: ignore[arg-type]
    else:
        point = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP384R1(), public[att.CKA_EC_POINT]
        )
        assert point.public_numbers().x == int.from_bytes(key.x, "big")  # type: ignore[arg-type]
    # Without a version: the latest.
    assert client.get_key_attestation(unique_name).id == created.id


def test_an_exportable_hsm_key_is_attested_as_extractable(
    hsm: EmulatorProcess, unique_name: str
) -> None:
    client = _keys(hsm.env)
    created = client.create_rsa_key(
        unique_name, hardware_protected=True, exportable=True, release_policy=POLICY
    )
    attested = client.get_key_attestation(unique_name, created.properties.version)
    assert attested.properties.exportable is True
    assert attested.properties.release_policy is not None
    found = attested.properties.attestation
    assert found is not None
    assert found.certificate_pem_file is not None
    assert found.private_key_attestation is not None
    partition, _ = _chain(found.certificate_pem_file)
    private = _statement(found.private_key_attestation, partition)
    assert private[att.CKA_EXTRACTABLE] == b"\x01"
    assert private[att.CKA_NEVER_EXTRACTABLE] == b"\x00"


def test_the_managed_hsm_signer_role_uses_the_hsms_data_action_names(
    hsm: EmulatorProcess, unique_name: str
) -> None:
    env = hsm.env
    key = _keys(env).create_ec_key(unique_name, hardware_protected=True, curve="P-256")
    client_id = "7e3a1f00-0000-4000-8000-0000000000c2"
    secret = hsm.admin.set_identity(client_id, secret=True)["secret"]
    credential = env.sp_credential(client_id=client_id, client_secret=secret)
    # A vault role grants nothing on an HSM: its actions are named differently.
    hsm.admin.set_role_assignments(
        client_id, [assignment("issuer-key-signer.json", f"/keys/{unique_name}")]
    )
    with pytest.raises(HttpResponseError) as caught:
        _keys(env, credential).get_key(unique_name)
    assert caught.value.status_code == 403
    assert f"Action: '{HSM_KV}keys/read/action'" in str(caught.value.message)
    hsm.admin.set_role_assignments(
        client_id, [assignment("managed-hsm-issuer-key-signer.json", f"/keys/{unique_name}")]
    )
    got = _keys(env, credential).get_key(unique_name)
    assert _keys(env, credential).get_key_attestation(unique_name).id == got.id
    crypto = CryptographyClient(got, credential, connection_verify=env.ca_file)
    assert crypto.sign(SignatureAlgorithm.es256, digest_for("ES256")).signature
    with pytest.raises(HttpResponseError) as caught:
        _keys(env, credential).update_key_properties(unique_name, enabled=False)
    assert f"Action: '{HSM_KV}keys/write/action'" in str(caught.value.message)
    assert key.properties.exportable is False
    # The refusal names the HSM as the resource.
    assert "/managedhsms/" in str(caught.value.message)


def test_the_attestation_chain_is_the_emulators_throwaway_ca(hsm: EmulatorProcess) -> None:
    # Nothing of Microsoft's or Marvell's: a reader must never mistake it for Azure's.
    client = _keys(hsm.env)
    client.create_rsa_key("attested", hardware_protected=True)
    found = client.get_key_attestation("attested").properties.attestation
    assert found is not None
    assert found.certificate_pem_file is not None
    for certificate in _chain(found.certificate_pem_file):
        assert "akv-emulator" in certificate.subject.rfc4514_string()
        assert certificate.public_bytes(serialization.Encoding.PEM)


def test_an_hsm_without_attestation_answers_400(hsm: EmulatorProcess, unique_name: str) -> None:
    client = _keys(hsm.env)
    client.create_ec_key(unique_name, hardware_protected=True)
    hsm.admin.set_vault(key_attestation=False)
    with pytest.raises(HttpResponseError) as caught:
        client.get_key_attestation(unique_name)
    assert caught.value.status_code == 400
    hsm.admin.reset()
    assert client.get_key_attestation(unique_name).properties.attestation is not None
