"""Who may call the dispatcher: the OIDC token that Pub/Sub push (and the safety-net schedule)
attaches, checked with google-auth.

A push subscription with ``--push-auth-service-account`` sends ``Authorization: Bearer JWT``,
a Google-signed ID token whose ``aud`` is the subscription's audience and whose ``email`` is
that service account. ``DISPATCH_PUSH_AUTH`` says how much of it this process checks:

- ``verify`` (the default): everything, here. The signature against Google's published
  certificates (``DISPATCH_PUSH_CERTS_URL``, cached as long as their ``Cache-Control`` allows),
  expiry, the audience (``google.oauth2.id_token.verify_token``), the issuer (Google's, as
  ``verify_oauth2_token`` checks it), and that ``email`` is ``DISPATCH_PUSH_SERVICE_ACCOUNT``
  with ``email_verified``. Safe on any network.
- ``cloud-run``: behind Cloud Run with IAM (``--no-allow-unauthenticated``), which has verified
  the signature and the caller's ``run.invoker`` role before the request reaches the container,
  and then replaces the token's signature with ``SIGNATURE_REMOVED_BY_GOOGLE``. The claims are
  decoded without a signature and checked as above (the issuer, audience, expiry, account); a token
  that still has a signature is verified in full.
- ``none``: no check at all, accepted only on a loopback listener (the emulator's pushes carry
  no token).

A request without a usable token is a ``PushUnauthenticated`` (401); a valid token of another
account a ``PushForbidden`` (403); certificates that cannot be fetched a ``PushAuthUnavailable``
(503, so Pub/Sub retries).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

import cachecontrol
import requests
from google.auth import exceptions as auth_exceptions
from google.auth import jwt
from google.auth.transport.requests import Request
from google.oauth2 import id_token

from vividly_tasks.dispatch.errors import DispatchConfigError
from vividly_tasks.dispatch.settings import DispatchSettings
from vividly_tasks.http_server import is_loopback

logger = logging.getLogger(__name__)

PushAuthMode = Literal["verify", "cloud-run", "none"]

#: What Cloud Run puts in place of the signature of a token it verified.
REMOVED_SIGNATURE = "SIGNATURE_REMOVED_BY_GOOGLE"
#: Google's ID token issuers (``google.oauth2.id_token.verify_oauth2_token``'s list).
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
#: Clock difference tolerated between Google and this machine, seconds.
CLOCK_SKEW_SECONDS = 10
#: Time limit of one fetch of the certificates, seconds.
CERTS_TIMEOUT_SECONDS = 10.0


class PushAuthError(Exception):
    """A request the dispatcher refuses; ``status`` is its HTTP answer."""

    status = 401


class PushUnauthenticated(PushAuthError):
    """No token, or one that is not a valid Google ID token for this audience."""


class PushForbidden(PushAuthError):
    """A valid token of an account that may not wake the dispatcher."""

    status = 403


class PushAuthUnavailable(PushAuthError):
    """Google's certificates could not be fetched: the token cannot be checked now."""

    status = 503


class PushVerifier:
    """Checks a request's ``Authorization`` header; returns the token's claims."""

    def __init__(self, *, mode: PushAuthMode, audience: str | None,
                 service_account: str | None, certs_url: str) -> None:
        self.mode = mode
        self.audience = audience
        self.service_account = service_account
        self.certs_url = certs_url
        # verify_token fetches the certificates on every call; a burst of pushes must not
        # fetch them hundreds of times, so the session caches what Cache-Control allows.
        session = cachecontrol.CacheControl(requests.Session())
        self._request = Request(session=session)

    def verify(self, authorization: str | None) -> Mapping[str, Any]:
        if self.mode == "none":
            return {}
        token = bearer_token(authorization)
        if self.mode == "cloud-run" and token.endswith("." + REMOVED_SIGNATURE):
            claims = self._claims_checked_by_cloud_run(token)
        else:
            claims = self._verified_claims(token)
        self._check_account(claims)
        return claims

    def _verified_claims(self, token: str) -> Mapping[str, Any]:
        try:
            claims = id_token.verify_token(
                token, self._request, audience=self.audience, certs_url=self.certs_url,
                clock_skew_in_seconds=CLOCK_SKEW_SECONDS)
        except auth_exceptions.TransportError as exc:
            raise PushAuthUnavailable(f"cannot fetch the token certificates: {exc}") from None
        except (ValueError, auth_exceptions.GoogleAuthError) as exc:
            # InvalidValue, MalformedError (both ValueError): signature, expiry, audience.
            raise PushUnauthenticated(f"invalid token: {exc}") from None
        _check_issuer(claims)
        return claims

    def _claims_checked_by_cloud_run(self, token: str) -> Mapping[str, Any]:
        try:
            claims: Mapping[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token, verify=False)
        except (ValueError, auth_exceptions.GoogleAuthError) as exc:
            raise PushUnauthenticated(f"unreadable token: {exc}") from None
        _check_issuer(claims)
        audience = claims.get("aud")
        if audience != self.audience:
            raise PushUnauthenticated(f"token audience {audience!r} is not {self.audience!r}")
        expiry = claims.get("exp")
        if not isinstance(expiry, int | float) or expiry + CLOCK_SKEW_SECONDS < time.time():
            raise PushUnauthenticated("token expired")
        return claims

    def _check_account(self, claims: Mapping[str, Any]) -> None:
        email = claims.get("email")
        if email != self.service_account:
            raise PushForbidden(f"token of {email!r}, not the push service account")
        if claims.get("email_verified") is not True:
            raise PushForbidden(f"token of {email!r} without a verified email")


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer TOKEN`` header."""
    if not authorization:
        raise PushUnauthenticated("no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise PushUnauthenticated("the Authorization header is not 'Bearer TOKEN'")
    return token.strip()


def _check_issuer(claims: Mapping[str, Any]) -> None:
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise PushUnauthenticated(f"token issuer {claims.get('iss')!r} is not Google")


def push_verifier(settings: DispatchSettings, *, host: str) -> PushVerifier:
    """The verifier ``DISPATCH_PUSH_*`` describe for a listener on ``host``; refuses (exit 78)
    a configuration that would let anyone in."""
    mode = settings.dispatch_push_auth
    if mode == "none" and not is_loopback(host):
        raise DispatchConfigError(
            f"DISPATCH_PUSH_AUTH=none accepts requests from anyone: it is allowed only on a "
            f"loopback interface, not on {host!r} (set DISPATCH_PUSH_AUTH=verify, with "
            f"DISPATCH_PUSH_AUDIENCE and DISPATCH_PUSH_SERVICE_ACCOUNT)")
    if mode != "none":
        missing = [name for name, value in (
            ("DISPATCH_PUSH_AUDIENCE", settings.dispatch_push_audience),
            ("DISPATCH_PUSH_SERVICE_ACCOUNT", settings.dispatch_push_service_account))
            if not value]
        if missing:
            raise DispatchConfigError(
                f"DISPATCH_PUSH_AUTH={mode} needs {' and '.join(missing)} (the push "
                f"subscription's audience and service account)")
    return PushVerifier(mode=mode, audience=settings.dispatch_push_audience,
                        service_account=settings.dispatch_push_service_account,
                        certs_url=settings.dispatch_push_certs_url)
