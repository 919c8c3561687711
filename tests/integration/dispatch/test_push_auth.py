"""Who may wake ``vividly dispatch serve``: tokens signed by the test's own key, whose
certificate a loopback server publishes, verified by google-auth's own code in a real
``dispatch serve`` process in front of the loopback Run Admin API. A refused request starts
nothing; a valid one starts an execution."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.dispatch import DispatchServe, api_env, apis, post, push_body
from harness.fakes.cloud_run import FakeCloudRun
from harness.fakes.monitoring import FakeMonitoring
from harness.push_tokens import (
    AUDIENCE,
    CertsServer,
    TokenIssuer,
    certs,
    google,
    verify_env,
    without_signature,
)
from harness.workers import REPO_ROOT

__all__ = ["apis", "certs", "google"]  # the fixtures



def serve(apis: tuple[FakeMonitoring, FakeCloudRun], tmp_path: Path,
          **env: str) -> DispatchServe:
    return DispatchServe({**api_env(apis), "DISPATCH_GATHER_SECONDS": "0.3", **env},
                         tmp_path / "dispatch.log")


def test_forged_expired_misaddressed_foreign_and_missing_tokens_start_nothing(
        apis: tuple[FakeMonitoring, FakeCloudRun], certs: CertsServer, google: TokenIssuer,
        tmp_path: Path) -> None:
    _, cloud_run = apis
    forger = TokenIssuer("google-key-1")  # same key id, another key: a forged signature
    server = serve(apis, tmp_path, **verify_env(certs))
    try:
        push = f"{server.url}/push"
        refused = {
            "forged": post(push, push_body("t1"), token=forger.token()),
            "expired": post(push, push_body("t2"),
                            token=google.token(iat=int(time.time()) - 7200,
                                               exp=int(time.time()) - 3600)),
            "wrong audience": post(push, push_body("t3"),
                                   token=google.token(aud="https://elsewhere.example")),
            "wrong issuer": post(push, push_body("t4"),
                                 token=google.token(iss="https://evil.example")),
            "wrong account": post(push, push_body("t5"),
                                  token=google.token(email="intruder@proj.iam.gserviceaccount"
                                                           ".com")),
            "unverified email": post(push, push_body("t6"),
                                     token=google.token(email_verified=False)),
            "missing": post(push, push_body("t7")),
            "not a token": post(push, push_body("t8"), token="not.a.jwt"),
            "signature removed": post(push, push_body("t9"),
                                      token=without_signature(google.token())),
            "check without token": post(f"{server.url}/check"),
            "another subscription": post(
                push, push_body("t10", subscription="projects/proj/subscriptions/other"),
                token=google.token()),
        }
        assert refused == {
            "forged": 401, "expired": 401, "wrong audience": 401, "wrong issuer": 401,
            "wrong account": 403, "unverified email": 403, "missing": 401,
            "not a token": 401, "signature removed": 401, "check without token": 401,
            "another subscription": 403,
        }
        assert cloud_run.run_requests == []
        assert server.decisions() == []  # nothing was remembered, nothing decided
        logged = [r for r in server.log_records() if r.get("event") == "dispatch_refused"]
        assert sorted(r["status"] for r in logged) == sorted(refused.values())

        # The real thing: Google's key, the audience, the push service account.
        assert post(push, push_body("real"), token=google.token()) == 204
        assert [r.overrides.task_count for r in cloud_run.run_requests] == [1]
        assert server.decisions()[-1]["inputs"]["arrivals"]["known"] == 1  # type: ignore[index]
        # Verified more than ten times, fetched once: the certificates are cached.
        assert certs.fetches == 1
    finally:
        server.stop()


def test_behind_cloud_run_iam_the_claims_are_checked_without_the_signature(
        apis: tuple[FakeMonitoring, FakeCloudRun], certs: CertsServer, google: TokenIssuer,
        tmp_path: Path) -> None:
    _, cloud_run = apis
    server = serve(apis, tmp_path, **{**verify_env(certs), "DISPATCH_PUSH_AUTH": "cloud-run"})
    try:
        push = f"{server.url}/push"
        assert post(push, push_body("a"), token=without_signature(
            google.token(email="intruder@proj.iam.gserviceaccount.com"))) == 403
        assert post(push, push_body("b"), token=without_signature(
            google.token(aud="https://elsewhere.example"))) == 401
        assert post(push, push_body("c"), token=without_signature(
            google.token(exp=int(time.time()) - 3600))) == 401
        assert post(push, push_body("d"), token=TokenIssuer("google-key-1").token()) == 401
        assert cloud_run.run_requests == []
        assert post(push, push_body("e"), token=without_signature(google.token())) == 204
        assert len(cloud_run.run_requests) == 1
    finally:
        server.stop()


@pytest.mark.parametrize(("env", "message"), [
    ({"DISPATCH_PUSH_AUTH": "none"}, "only on a loopback interface"),
    ({"DISPATCH_PUSH_AUTH": "verify"}, "DISPATCH_PUSH_AUDIENCE and DISPATCH_PUSH_SERVICE_ACCOUNT"),
    ({"DISPATCH_PUSH_AUTH": "cloud-run", "DISPATCH_PUSH_AUDIENCE": AUDIENCE},
     "needs DISPATCH_PUSH_SERVICE_ACCOUNT"),
])
def test_a_listener_that_would_let_anyone_in_refuses_to_start(
        env: dict[str, str], message: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vividly_tasks.cli", "dispatch", "serve", "--host", "0.0.0.0",
         "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "VIVIDLY_DATA_DIR": str(tmp_path), "LOG_FORMAT": "text",
             "DISPATCH_RUNNER": "local", **env},
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 78, result.stderr
    assert message in result.stderr
