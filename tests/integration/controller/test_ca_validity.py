"""A CA that stops being valid between the issuer check and a signing."""

from __future__ import annotations

import asyncio
import datetime as dt

from support.controller_harness import Env, condition, csr_pem


async def test_ca_expiring_after_the_check_leaves_the_request_pending_and_the_issuer_rechecked(
    env: Env,
) -> None:
    # Valid for a few seconds: Ready at its first check, expired when the
    # request comes. The periodic re-check is far away, so only the signing
    # attempt can notice.
    ca = await env.make_ca("EC", curve="P-256", lifetime=dt.timedelta(seconds=12))
    await env.create_issuer("short-ca", env.issuer_spec(ca))
    controller = env.start_controller("--issuer-recheck-interval", "1h")
    await env.wait_issuer("short-ca", "True")
    signs_before = env.sign_calls()

    left = (ca.cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds()
    await asyncio.sleep(max(0.0, left) + 1.5)
    await env.create_request("late", csr_pem(), "short-ca")
    await env.approve("late")

    pending = await env.wait_request("late", "Pending", message="CAExpired")
    message = condition(pending, "Ready")["message"]
    assert message.startswith("IssuerNotReady: ")
    assert "short-ca is not ready (CAExpired: " in message
    assert "certificate" not in pending["status"]

    # The signing attempt brought the issuer's check forward: it reports the
    # CA's own reason, and nothing was sent to Key Vault to be signed.
    issuer = await env.wait_issuer("short-ca", "False", "CAExpired")
    assert "expired" in condition(issuer, "Ready")["message"]
    await env.wait_event("late", "WaitingForIssuerReady", type_="Warning")
    assert env.sign_calls() == signs_before
    assert "Traceback" not in controller.log()
