"""The emulator's Key Vault limits (issue 26 item 3) and its outage switch, through the
real Azure SDK: per vault, one weighted sliding window whose sum is enforced (a sign or
a read of a key of limit class C uses 1/limit[C] of it), the 429 Key Vault answers
(``{"error": {"code": "Throttled", ...}}``, Retry-After only when asked for), throttled
requests not counted; a vault taken down at runtime (connection reset or 503) and
brought back."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm

from akv_emulator.testing import EmulatorError, EmulatorProcess
from support.emulator import digest_for

# A window long enough that nothing leaves it while a test runs.
LONG = 600


def clients(emulator: EmulatorProcess) -> tuple[KeyClient, Any]:
    env = emulator.env
    credential = env.sp_credential()
    keys = KeyClient(env.vault_url, credential, connection_verify=env.ca_file, retry_total=0)
    return keys, credential


def crypto_for(emulator: EmulatorProcess, key: Any, credential: Any) -> CryptographyClient:
    return CryptographyClient(
        key, credential, connection_verify=emulator.env.ca_file, retry_total=0
    )


def test_signs_and_key_reads_of_every_class_share_one_weighted_window(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    keys, credential = clients(emulator)
    big = keys.create_rsa_key(f"{unique_name}-4096", size=4096, hardware_protected=True)
    small = keys.create_rsa_key(f"{unique_name}-2048", size=2048)
    # 2 HSM RSA-4096 or 8 software RSA-2048 transactions per window: one of the first
    # uses what four of the second do.
    emulator.admin.set_faults(
        {
            "throttle": {
                "preset": "azure",
                "limits": {"RSA-4096-HSM": 2, "RSA-2048": 8},
                "window_seconds": LONG,
            }
        }
    )
    crypto_for(emulator, big, credential).sign(SignatureAlgorithm.rs512, digest_for("RS512"))
    small_crypto = crypto_for(emulator, small, credential)
    for _ in range(3):
        small_crypto.sign(SignatureAlgorithm.rs256, digest_for("RS256"))
    keys.get_key(small.name)  # a read counts like a sign: the window is full now
    with pytest.raises(HttpResponseError) as signed:
        small_crypto.sign(SignatureAlgorithm.rs256, digest_for("RS256"))
    with pytest.raises(HttpResponseError) as read:
        keys.get_key(small.name)
    for err in (signed, read):
        assert err.value.status_code == 429
        body = json.loads(err.value.response.text())
        assert body["error"]["code"] == "Throttled"
        assert body["error"]["message"] == (
            "Request was not processed because too many requests were received. "
            "Reason: VaultRequestTypeLimitReached"
        )
        # Key Vault does not promise Retry-After; the emulator sends none unless asked.
        assert "Retry-After" not in err.value.response.headers
    assert emulator.admin.responses()["sign"] == {"200": 4, "429": 1}


def test_retry_after_when_asked_is_the_wait_until_the_window_has_room(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    keys, credential = clients(emulator)
    key = keys.create_ec_key(unique_name, curve="P-256")
    emulator.admin.set_faults(
        {"throttle": {"limits": {"EC": 1}, "window_seconds": LONG, "retry_after": 0}}
    )
    crypto = crypto_for(emulator, key, credential)
    crypto.sign(SignatureAlgorithm.es256, digest_for("ES256"))
    with pytest.raises(HttpResponseError) as err:
        crypto.sign(SignatureAlgorithm.es256, digest_for("ES256"))
    assert err.value.status_code == 429
    seconds = int(err.value.response.headers["Retry-After"])
    assert LONG - 60 < seconds <= LONG


def test_throttled_requests_do_not_count_and_other_classes_are_not_limited(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    keys, credential = clients(emulator)
    ec_key = keys.create_ec_key(f"{unique_name}-ec", curve="P-256")
    rsa_key = keys.create_rsa_key(f"{unique_name}-rsa", size=2048)
    # Only EC is limited (no preset): RSA-2048 calls neither count nor wait.
    emulator.admin.set_faults({"throttle": {"limits": {"EC": 2}, "window_seconds": LONG}})
    ec_crypto = crypto_for(emulator, ec_key, credential)
    ec_crypto.sign(SignatureAlgorithm.es256, digest_for("ES256"))
    for _ in range(5):
        crypto_for(emulator, rsa_key, credential).sign(
            SignatureAlgorithm.rs256, digest_for("RS256")
        )
    ec_crypto.sign(SignatureAlgorithm.es256, digest_for("ES256"))
    for _ in range(3):
        with pytest.raises(HttpResponseError):
            ec_crypto.sign(SignatureAlgorithm.es256, digest_for("ES256"))
    faults = emulator.admin.faults()
    # Raising the limit at runtime: the three 429s above used none of the window.
    faults["throttle"]["limits"] = {"EC": 3}
    emulator.admin.set_faults(faults)
    ec_crypto.sign(SignatureAlgorithm.es256, digest_for("ES256"))
    assert emulator.admin.responses()["sign"] == {"200": 8, "429": 3}


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_a_vault_taken_down_and_brought_back_at_runtime(
    emulator: EmulatorProcess, unique_name: str, mode: str
) -> None:
    keys, credential = clients(emulator)
    key = keys.create_ec_key(unique_name, curve="P-256")
    host = urlsplit(emulator.env.vault_url).netloc
    # Another vault's outage does not touch this one.
    emulator.admin.set_outage({"other.vault.azure.net": mode})
    assert keys.get_key(unique_name).name == unique_name
    assert emulator.admin.set_outage({host: mode}) == {"down": {host.lower(): mode}}
    crypto = crypto_for(emulator, key, credential)
    if mode == "503":
        with pytest.raises(HttpResponseError) as err:
            keys.get_key(unique_name)
        assert err.value.status_code == 503
        assert json.loads(err.value.response.text())["error"]["code"] == "ServiceUnavailable"
    else:
        with pytest.raises((ServiceRequestError, ServiceResponseError)):
            keys.get_key(unique_name)
        with pytest.raises((ServiceRequestError, ServiceResponseError)):
            crypto.sign(SignatureAlgorithm.es256, digest_for("ES256"))
    emulator.admin.set_outage({})
    assert keys.get_key(unique_name).name == unique_name
    assert len(crypto.sign(SignatureAlgorithm.es256, digest_for("ES256")).signature) == 64


def test_every_vault_down_and_a_reset_brings_them_back(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    keys, _ = clients(emulator)
    keys.create_ec_key(unique_name, curve="P-256")
    emulator.admin.set_outage({"*": "503"})
    with pytest.raises(HttpResponseError):
        keys.get_key(unique_name)
    emulator.admin.reset()
    assert keys.get_key(unique_name).name == unique_name


@pytest.mark.parametrize(
    "outage",
    [{"down": {"vault": "flood"}}, {"down": ["vault"]}, {"up": {}}],
)
def test_bad_outage_settings_are_refused_clearly(
    emulator: EmulatorProcess, outage: dict[str, Any]
) -> None:
    with pytest.raises(EmulatorError) as err:
        emulator.admin.call("PUT", "outage", outage)
    assert "HTTP 400" in str(err.value)
    assert "reset, 503" in str(err.value) or "JSON object" in str(err.value)
