"""Webhook delivery over real HTTP to a local receiver that checks signatures itself.

Its paths choose how it answers (status codes, redirects, slowness, huge or
trickling answers), which the shared ``harness.testing.receiver`` does not
model; the signature check is that module's, written from docs/webhooks.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.testing.receiver import legacy_ok
from worker.outbox.destinations import validate_webhook_url
from worker.outbox.webhooks import DeliveryResult, WebhookClient, deliver

pytestmark = pytest.mark.integration

SECRET = "whsec_integration_secret_value"
EVENT_ID = "evt_01J9Z3K7Q2"
EVENT_TYPE = "connection.reauthorization_required"
BODY = json.dumps(
    {
        "id": EVENT_ID,
        "type": EVENT_TYPE,
        "created_at": "2026-05-01T12:00:00Z",
        "connection_id": "conn_42",
        "entity_type": None,
        "reason": {"kind": "auth", "http_status": 401, "code": "token_expired", "message": "x"},
        "instruction": "Reconnect the integration.",
    }
).encode()
HUGE_BYTES = 200 * 1024 * 1024


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool


@dataclass
class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1:0 whose paths choose the behaviour."""

    server: ThreadingHTTPServer
    stop: threading.Event
    requests: list[Received] = field(default_factory=list)
    redirect_to: str = ""
    bytes_sent: int = 0

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def make_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signature = self.headers.get("X-EntitySync-Signature", "")
            receiver.requests.append(
                Received(
                    self.path,
                    dict(self.headers),
                    body,
                    legacy_ok(SECRET, signature, body, time.time()),
                )
            )
            # The client may stop listening (huge bodies): that is the point.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.respond()

        def respond(self) -> None:
            path = urlsplit(self.path).path
            if path.startswith("/status/"):
                self.answer(int(path.rsplit("/", 1)[1]))
            elif path.startswith("/redirect/"):
                self.send_response(int(path.rsplit("/", 1)[1]))
                self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/slow":
                receiver.stop.wait(5)
                self.answer(200)
            elif path == "/huge":
                self.send_response(200)
                self.send_header("Content-Length", str(HUGE_BYTES))
                self.end_headers()
                chunk = b"x" * 65536
                while receiver.bytes_sent < HUGE_BYTES and not receiver.stop.is_set():
                    self.wfile.write(chunk)
                    receiver.bytes_sent += len(chunk)
            elif path == "/trickle-headers":
                # Each byte comes well inside the read timeout; only a
                # whole-request deadline stops this.
                head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 400 + b"\r\n\r\n"
                for byte in head:
                    if receiver.stop.wait(0.05):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            else:
                self.answer(404)

        def answer(self, status: int) -> None:
            payload = b'{"ok": true}' if status != 204 else b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def start_receiver(tls: ssl.SSLContext | None = None) -> Receiver:
    receiver = Receiver(server=None, stop=threading.Event())  # type: ignore[arg-type]
    receiver.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(receiver))
    if tls is not None:
        receiver.server.socket = tls.wrap_socket(receiver.server.socket, server_side=True)
    threading.Thread(
        target=receiver.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return receiver


def stop_receiver(receiver: Receiver) -> None:
    receiver.stop.set()
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = start_receiver()
    yield running
    stop_receiver(running)


@pytest.fixture
def target() -> Iterator[Receiver]:
    """A second receiver: where redirects point; it must never hear from us."""
    running = start_receiver()
    yield running
    stop_receiver(running)


@pytest.fixture
def client() -> Iterator[WebhookClient]:
    with WebhookClient(
        connect_timeout=1.0,
        read_timeout=0.5,
        write_timeout=1.0,
        pool_timeout=1.0,
        deadline_s=1.0,
        allow_http=True,
        allow_private=True,
    ) as webhook_client:
        yield webhook_client


def send(client: WebhookClient, url: str) -> tuple[DeliveryResult, float]:
    started = time.monotonic()
    result = deliver(
        client,
        url,
        secret=SECRET,
        event_id=EVENT_ID,
        event_type=EVENT_TYPE,
        body=BODY,
        now=int(time.time()),
    )
    assert SECRET not in result.reason
    return result, time.monotonic() - started


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered_and_signed(
    client: WebhookClient, receiver: Receiver, status: int
) -> None:
    result, _ = send(client, receiver.url(f"/status/{status}"))
    assert result == DeliveryResult(
        delivered=True, status=status, reason=f"HTTP {status}", duration_s=result.duration_s
    )
    [request] = receiver.requests
    assert request.signature_ok
    assert request.body == BODY


def test_event_headers_are_present(client: WebhookClient, receiver: Receiver) -> None:
    send(client, receiver.url("/status/204"))
    headers = {name.lower(): value for name, value in receiver.requests[0].headers.items()}
    assert headers["x-entitysync-event-id"] == EVENT_ID
    assert headers["x-entitysync-event-type"] == EVENT_TYPE
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "entity-sync-webhooks/0.1"
    assert headers["x-entitysync-signature"].startswith("t=")
    assert "authorization" not in headers


def test_redelivery_keeps_the_id_with_a_fresh_signature(
    client: WebhookClient, receiver: Receiver
) -> None:
    for _ in range(3):
        assert send(client, receiver.url("/status/204"))[0].delivered
    assert [r.headers["X-EntitySync-Event-Id"] for r in receiver.requests] == [EVENT_ID] * 3
    assert all(r.signature_ok for r in receiver.requests)


@pytest.mark.parametrize("status", [400, 404, 410, 500, 503])
def test_non_2xx_is_not_delivered(client: WebhookClient, receiver: Receiver, status: int) -> None:
    result, _ = send(client, receiver.url(f"/status/{status}"))
    assert not result.delivered
    assert result.status == status
    assert result.reason == f"HTTP {status}"
    assert result.retryable


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(
    client: WebhookClient, receiver: Receiver, target: Receiver, status: int
) -> None:
    receiver.redirect_to = target.url("/status/200")
    result, _ = send(client, receiver.url(f"/redirect/{status}"))
    assert not result.delivered
    assert result.status == status
    assert result.reason == f"redirect refused (HTTP {status})"
    assert len(receiver.requests) == 1
    assert target.requests == []


def test_slow_receiver_is_not_delivered_and_we_do_not_wait(
    client: WebhookClient, receiver: Receiver
) -> None:
    result, elapsed = send(client, receiver.url("/slow"))
    assert not result.delivered
    assert result.status is None
    assert result.reason == "timed out (ReadTimeout)"
    assert elapsed < 0.5 + 0.5


def test_trickling_headers_hit_the_whole_request_deadline(
    client: WebhookClient, receiver: Receiver
) -> None:
    result, elapsed = send(client, receiver.url("/trickle-headers"))
    assert not result.delivered
    assert result.reason == "no complete answer within the 1s deadline"
    assert 0.9 < elapsed < 1.0 + 0.5


def test_huge_response_body_is_capped(client: WebhookClient, receiver: Receiver) -> None:
    result, elapsed = send(client, receiver.url("/huge"))
    assert result.delivered
    assert result.status == 200
    assert elapsed < 1.0
    time.sleep(0.2)  # let the receiver notice the closed connection
    # Socket buffers absorb a few MB; the rest of the 200 MB is never sent.
    assert receiver.bytes_sent < 32 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_a_result_with_a_reason(client: WebhookClient) -> None:
    result, elapsed = send(client, f"http://127.0.0.1:{free_port()}/hook")
    assert not result.delivered
    assert result.status is None
    assert result.reason.startswith("connection failed:")
    assert "refused" in result.reason.lower()
    assert result.retryable
    assert elapsed < 1.0


def test_unresolvable_host_is_a_result(receiver: Receiver) -> None:
    def no_dns(host: str) -> list[str]:
        raise OSError("[Errno -2] Name or service not known")

    with WebhookClient(allow_http=True, resolve=no_dns) as webhook_client:
        result, _ = send(webhook_client, f"http://hooks.customer.test:{receiver.port}/status/200")
    assert not result.delivered
    assert "cannot resolve hooks.customer.test" in result.reason


# --- the SSRF guard at connect time ----------------------------------------------------


def resolver(answers: dict[str, list[list[str]]]) -> Callable[[str], list[str]]:
    """A resolver that gives each name's answers in turn (the last one repeats)."""
    calls: dict[str, int] = {}

    def resolve(host: str) -> list[str]:
        index = calls.get(host, 0)
        calls[host] = index + 1
        return answers[host][min(index, len(answers[host]) - 1)]

    return resolve


def test_connect_uses_our_resolver_and_pins_its_answer(receiver: Receiver) -> None:
    # receiver.test exists in no DNS: delivery works only because the
    # connector connects to the address our resolver gave.
    resolve = resolver({"receiver.test": [["127.0.0.1"]]})
    with WebhookClient(allow_http=True, allow_private=True, resolve=resolve) as webhook_client:
        result, _ = send(webhook_client, f"http://receiver.test:{receiver.port}/status/204")
    assert result.delivered
    assert receiver.requests[0].headers["Host"] == f"receiver.test:{receiver.port}"


def test_name_resolving_to_loopback_is_refused_at_connect(receiver: Receiver) -> None:
    resolve = resolver({"hooks.customer.test": [["127.0.0.1"]]})
    with WebhookClient(allow_http=True, allow_private=False, resolve=resolve) as webhook_client:
        result, _ = send(webhook_client, f"http://hooks.customer.test:{receiver.port}/status/200")
    assert not result.delivered
    assert result.reason == (
        "destination refused: hooks.customer.test resolves to 127.0.0.1, which is loopback; "
        "set ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE=true for local development"
    )
    assert receiver.requests == []


def test_dns_rebinding_after_validation_is_refused(receiver: Receiver) -> None:
    # Public when the URL is registered, loopback when it is used.
    resolve = resolver({"rebind.customer.test": [["93.184.215.14"], ["127.0.0.1"]]})
    url = f"http://rebind.customer.test:{receiver.port}/status/200"
    assert validate_webhook_url(url, allow_http=True, allow_private=False, resolve=resolve) == url
    with WebhookClient(allow_http=True, allow_private=False, resolve=resolve) as webhook_client:
        result, _ = send(webhook_client, url)
    assert not result.delivered
    assert result.reason.startswith("destination refused:")
    assert receiver.requests == []


def self_signed(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[str, str, bytes]:
    """(cert file, key file, PEM) of a self-signed certificate for ``name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(folder / "cert.pem"), str(folder / "key.pem"), pem


@pytest.fixture
def tls_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Receiver, bytes]]:
    cert_file, key_file, pem = self_signed(tmp_path_factory, "receiver.test")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)
    running = start_receiver(server_tls)
    yield running, pem
    stop_receiver(running)


@pytest.mark.parametrize(("name", "ok"), [("receiver.test", True), ("other.test", False)])
def test_tls_checks_the_certificate_against_the_name_not_the_pinned_ip(
    tls_receiver: tuple[Receiver, bytes], name: str, ok: bool
) -> None:
    receiver, pem = tls_receiver
    trust = ssl.create_default_context(cadata=pem.decode())
    resolve = resolver({name: [["127.0.0.1"]]})
    with WebhookClient(allow_private=True, resolve=resolve, ssl_context=trust) as webhook_client:
        result, _ = send(webhook_client, f"https://{name}:{receiver.port}/status/204")
    assert result.delivered is ok
    if ok:
        assert receiver.requests[0].signature_ok
    else:
        assert "certificate" in result.reason.lower(), result.reason
        assert receiver.requests == []


def test_static_rules_apply_at_send_time(receiver: Receiver) -> None:
    with WebhookClient(allow_http=False, allow_private=True) as webhook_client:
        result, _ = send(webhook_client, receiver.url("/status/200"))
        assert not result.delivered
        assert not result.retryable
        assert "https is required" in result.reason
    with WebhookClient(allow_http=True, allow_private=False) as webhook_client:
        result, _ = send(webhook_client, receiver.url("/status/200"))
        assert not result.retryable
        assert "127.0.0.1 is loopback" in result.reason
    assert receiver.requests == []


def test_logs_carry_the_event_but_never_the_secret_or_the_query(
    client: WebhookClient, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="entity_sync.webhooks")
    send(client, receiver.url("/status/204?token=q-secret"))
    send(client, receiver.url("/status/500?token=q-secret"))
    delivered, failed = caplog.records
    assert delivered.getMessage() == "webhook delivered"
    assert failed.getMessage() == "webhook not delivered"
    assert failed.levelno == logging.WARNING
    for record in caplog.records:
        assert record.__dict__["event_id"] == EVENT_ID
        assert record.__dict__["host"] == "127.0.0.1"
        flat = repr(record.__dict__)
        assert SECRET not in flat
        assert "q-secret" not in flat


def test_bad_event_id_is_a_caller_bug(client: WebhookClient, receiver: Receiver) -> None:
    with pytest.raises(ValueError, match="event_id"):
        deliver(
            client,
            receiver.url("/status/200"),
            secret=SECRET,
            event_id="evt\r\nX-Injected: 1",
            event_type=EVENT_TYPE,
            body=BODY,
            now=int(time.time()),
        )
    assert receiver.requests == []
