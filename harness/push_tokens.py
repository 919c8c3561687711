"""OIDC tokens as Pub/Sub push attaches them, signed by the test's own RSA key, and a loopback
server that publishes the key's certificate as Google's v1 certs URL does (``{kid: PEM}``):
``vividly dispatch serve`` verifies them with google-auth's own code, pointed here."""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

AUDIENCE = "https://vividly-dispatcher.example.run.app"
PUSHER = "vividly-wake-up@proj.iam.gserviceaccount.com"


class TokenIssuer:
    """Signs ID tokens with a key of its own; ``certificates`` publishes its public half."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, key_id)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                       .public_key(key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(days=1))
                       .not_valid_after(now + datetime.timedelta(days=1))
                       .sign(key, hashes.SHA256()))
        self.certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        private_pem = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        self.signer = crypt.RSASigner.from_string(private_pem, key_id=key_id)

    def token(self, **claims: Any) -> str:
        """A push token (Google's issuer, the test audience and pusher, valid for an hour)
        with ``claims`` replaced."""
        now = int(time.time())
        payload = {"iss": "https://accounts.google.com", "aud": AUDIENCE, "email": PUSHER,
                   "email_verified": True, "sub": "109876543210", "azp": "109876543210",
                   "iat": now, "exp": now + 3600, **claims}
        return jwt.encode(self.signer, payload).decode()


class CertsServer:
    """Google's v1 certs URL on loopback, with a ``Cache-Control`` like Google's."""

    def __init__(self, *issuers: TokenIssuer) -> None:
        self.certificates = {i.key_id: i.certificate_pem for i in issuers}
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps(outer.certificates).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/oauth2/v1/certs"


@contextmanager
def certs_server(*issuers: TokenIssuer) -> Iterator[CertsServer]:
    server = CertsServer(*issuers)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def verify_env(certs: CertsServer) -> dict[str, str]:
    """The settings of a dispatcher that verifies the tokens these issuers sign."""
    return {"DISPATCH_PUSH_AUTH": "verify", "DISPATCH_PUSH_AUDIENCE": AUDIENCE,
            "DISPATCH_PUSH_SERVICE_ACCOUNT": PUSHER, "DISPATCH_PUSH_CERTS_URL": certs.url}


def without_signature(token: str) -> str:
    """The token as Cloud Run hands it to the container after verifying it."""
    header, payload, _ = token.split(".")
    return f"{header}.{payload}.SIGNATURE_REMOVED_BY_GOOGLE"


@pytest.fixture(scope="module")
def google() -> TokenIssuer:
    """The key whose certificate the certs URL publishes: it plays Google."""
    return TokenIssuer("google-key-1")


@pytest.fixture
def certs(google: TokenIssuer) -> Iterator[CertsServer]:
    with certs_server(google) as server:
        yield server
