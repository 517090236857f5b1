"""The vault's throttling budget in the controller (issue 26): a burst of approved
requests against a vault whose limit the emulator enforces (Key Vault's weighted
10-second window, scaled down) -- with the budget set to the vault's figure the
controller waits instead of running into 429 and issues every request; with
--no-keyvault-budget the same burst is throttled by the vault."""

from __future__ import annotations

import pytest

from support.controller_harness import Env, csr_pem, wait_for

# P-256 software transactions per 10 s of the emulated vault (Key Vault's: 4,000).
EC_LIMIT = 10
BURST = 14


def throttled(env: Env, operation: str) -> int:
    return int(env.emulator.admin.responses().get(operation, {}).get("429", 0))


@pytest.mark.parametrize("budget", [True, False], ids=["budget", "no-budget"])
async def test_a_burst_waits_for_the_vaults_budget_instead_of_running_into_429(
    env: Env, budget: bool
) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    env.emulator.admin.set_faults({"throttle": {"limits": {"EC": EC_LIMIT}, "window_seconds": 10}})
    await env.create_issuer("limited", env.issuer_spec(ca))
    vault = env.emulator.env.vault_url
    flags = (
        ("--keyvault-budget-units", f"{vault}={EC_LIMIT}") if budget else ("--no-keyvault-budget",)
    )
    controller = env.start_controller(*flags)
    await env.wait_ready(controller)
    await env.wait_issuer("limited", "True", "Checked")
    names = [f"burst-{n}" for n in range(BURST)]
    for name in names:
        await env.create_request(name, csr_pem("ec", f"{name}.example.com"), "limited")
    for name in names:
        await env.approve(name)

    if not budget:
        # The vault answers what the controller did not hold back.
        async def vault_throttled() -> bool:
            return throttled(env, "sign") > 0

        await wait_for(vault_throttled, what="a 429 from the vault", env=env)
        return

    for name in names:
        await env.wait_request(name, "Issued")
    assert throttled(env, "sign") == 0
    assert throttled(env, "get_key") == 0
    assert controller.metric("akv_issuer_keyvault_throttled_total", by="vault") == 0
    # The calls beyond the figure waited for the window (at least one full window).
    assert controller.metric("akv_issuer_keyvault_budget_wait_seconds_sum", operation="sign") > 5
    assert controller.metric("akv_issuer_certificaterequests_issued_total") == BURST
