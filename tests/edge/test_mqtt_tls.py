"""MQTT over TLS against a real Mosquitto TLS listener, with certificates made in the test.

A throwaway CA signs a server certificate (127.0.0.1/localhost) and a client certificate (tests/support/tlscerts.py).
Checked: events over TLS with `mqtt.tls.ca_certs`; mutual TLS with certfile/keyfile; the two ways a TLS set-up
goes wrong at run time (we do not trust the broker; the broker does not trust us) are each logged once, clearly,
while paho keeps retrying; a missing TLS file stops `--check-config` and the daemon with exit 2.
"""

from __future__ import annotations

import logging
import signal
import ssl

import paho.mqtt.client as mqtt
import pytest

from edge.config import MqttConfig, TlsConfig
from edge.publish.base import to_json
from edge.publish.mqtt import MqttPublisher
from testbed.daemonproc import DaemonProcess, MjpegServer, daemon_args, live_frame, run_daemon, write_config
from testbed.mosquitto import MosquittoBroker, Subscriber, find_mosquitto, wait_until
from tests.support.tlscerts import NO_TLS_TOOL, make_ca, make_tls_files, tls_backend

DEVICE = "test-pi"
BASE = f"emotion/{DEVICE}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if tls_backend() is None:
        pytest.skip(NO_TLS_TOOL)
    root = tmp_path_factory.mktemp("pki")
    files = make_tls_files(root / "good")
    other_ca, _ = make_ca(root / "other", "other-ca")  # a CA that signed nothing the broker uses
    return files, other_ca


def _tls_broker(tmp_path, pki, require_client_cert: bool):
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto; .ci/run installs it)")
    files, _ = pki
    workdir = tmp_path / "broker"
    workdir.mkdir()
    lines = [f"cafile {files.ca_cert}", f"certfile {files.server_cert}", f"keyfile {files.server_key}"]
    if require_client_cert:
        lines.append("require_certificate true")
    return MosquittoBroker(binary, workdir, extra_config=lines).start()


@pytest.fixture
def tls_broker(tmp_path, pki):
    broker = _tls_broker(tmp_path, pki, require_client_cert=False)
    yield broker
    broker.stop()


@pytest.fixture
def mtls_broker(tmp_path, pki):
    broker = _tls_broker(tmp_path, pki, require_client_cert=True)
    yield broker
    broker.stop()


def _subscriber(broker, pki) -> Subscriber:
    files, _ = pki
    tls = {
        "ca_certs": str(files.ca_cert),
        "certfile": str(files.client_cert),
        "keyfile": str(files.client_key),
    }
    return Subscriber(broker, f"{BASE}/#", tls=tls)


def _publisher(broker, **tls) -> MqttPublisher:
    config = MqttConfig(host=broker.host, port=broker.port, tls=TlsConfig(enabled=True, **tls))
    return MqttPublisher(config, DEVICE)


def _delivers_exact_payload(publisher, broker, pki) -> None:
    event = {"frame_index": 3, "emotion": "surprise", "confidence": 0.5}
    with _subscriber(broker, pki) as sub:
        publisher.start()
        try:
            sub.wait_topic(f"{BASE}/status", b"online", timeout=10)
            publisher.publish_event(event)
            _, payload, _ = sub.wait_topic(f"{BASE}/events", timeout=10)
            assert payload == to_json(event).encode("utf-8")
        finally:
            publisher.close(timeout=2)


def test_events_over_tls_with_ca_certs(tls_broker, pki):
    files, _ = pki
    _delivers_exact_payload(_publisher(tls_broker, ca_certs=str(files.ca_cert)), tls_broker, pki)


def test_mutual_tls_with_client_certificate(mtls_broker, pki):
    files, _ = pki
    publisher = _publisher(mtls_broker, ca_certs=str(files.ca_cert), certfile=str(files.client_cert),
                           keyfile=str(files.client_key))  # fmt: skip
    _delivers_exact_payload(publisher, mtls_broker, pki)


@pytest.mark.backoff
def test_mutual_tls_without_client_certificate_is_reported_once(mtls_broker, pki, caplog):
    caplog.set_level(logging.INFO, logger="edge.publish.mqtt")
    files, _ = pki
    publisher = _publisher(mtls_broker, ca_certs=str(files.ca_cert))
    publisher.start()
    try:
        # paho retries after 1 s, then 2 s: the third attempt comes once the second failure was handled.
        assert wait_until(lambda: mtls_broker.log_count("peer did not return a certificate") >= 3, 30)
        assert not publisher.connected
        messages = [r.getMessage() for r in caplog.records]
        dropped = [m for m in messages if "closed the connection before accepting it" in m]
        assert len(dropped) == 1, messages
        # The detail is the broker's alert ("certificate required") or, when paho reads only the hang-up
        # after it, an EOF: which one is a race. The hint is what tells the user what to fix.
        assert "mqtt.tls.certfile" in dropped[0]
        assert "certificate required" in dropped[0] or "EOF" in dropped[0], dropped[0]
        assert not any(r.exc_info for r in caplog.records)
    finally:
        publisher.close(timeout=1)


def test_a_hang_up_reported_with_changing_error_texts_is_still_one_warning(caplog):
    # The race the broker test above cannot force: paho reads the broker's alert on one retry and only
    # the EOF after it on the next. Both are the same outage and must give one warning, not one each.
    caplog.set_level(logging.WARNING, logger="edge.publish.mqtt")
    publisher = MqttPublisher(MqttConfig(port=1, tls=TlsConfig(enabled=True)), DEVICE)
    alert = (
        "failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate "
        "required"
    )
    eof = "failed to receive on socket: EOF occurred in violation of protocol (_ssl.c:2427)"
    errors = [alert, eof, alert]
    for error in errors:
        publisher._on_paho_log(None, None, mqtt.MQTT_LOG_ERR, error)
        publisher._on_disconnect(None, None, None, "Unspecified error", None)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "certificate required" in warnings[0] and "mqtt.tls.certfile" in warnings[0]


def test_failures_alternating_between_two_kinds_are_each_reported_once_per_outage(caplog):
    # A TLS 1.2 broker refusing a client without a certificate: the handshake fails with its alert on one
    # retry and with a plain reset on the next. Two kinds, two warnings, however many retries.
    caplog.set_level(logging.WARNING, logger="edge.publish.mqtt")
    publisher = MqttPublisher(MqttConfig(port=1, tls=TlsConfig(enabled=True)), DEVICE)
    handshake = ssl.SSLError(1, "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure")
    handshake.reason = "SSLV3_ALERT_HANDSHAKE_FAILURE"  # what OpenSSL sets on the errors it raises

    def fail_with(error: Exception) -> None:
        try:
            raise error
        except OSError:  # paho calls on_connect_fail from inside its own `except OSError`
            publisher._on_connect_fail(None, None)

    for _ in range(4):
        fail_with(handshake)
        fail_with(ConnectionResetError(104, "Connection reset by peer"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "TLS handshake failed" in messages[0] and "unreachable" in messages[1]


@pytest.mark.backoff
def test_daemon_with_a_wrong_ca_logs_once_and_keeps_retrying(tls_broker, pki, tiny_model_path, tmp_path):
    _, other_ca = pki
    config = write_config(
        tmp_path,
        f"mqtt:\n  host: {tls_broker.host}\n  port: {tls_broker.port}\n  tls:\n    enabled: true\n"
        f"    ca_certs: {other_ca}\n  discovery:\n    enabled: false\nstats:\n  interval_s: 0\n",
    )
    with MjpegServer(live_frame(), fps=8) as camera:
        args = daemon_args(config, tiny_model_path, camera.url, "--publish", "mqtt", "--policy", "every")
        daemon = DaemonProcess(args, tmp_path)
        try:
            daemon.wait_stderr("TLS certificate verification failed", timeout=60)
            assert wait_until(lambda: tls_broker.log_count("unknown ca") >= 3, 30)  # two more retries
            assert daemon.proc.poll() is None
            log = daemon.stderr
            assert log.count("TLS certificate verification failed") == 1, log[-3000:]
            assert "check mqtt.tls.ca_certs" in log and f"{tls_broker.host}:{tls_broker.port}" in log
            assert "unreachable" not in log and "Traceback" not in log
            daemon.proc.send_signal(signal.SIGTERM)
            assert daemon.proc.wait(timeout=10) == 0
        finally:
            daemon.stop()


@pytest.mark.parametrize("mode", ["--check-config", "start"])
def test_missing_ca_file_fails_naming_the_key(tmp_path, tiny_model_path, mode):
    missing = tmp_path / "no-such-ca.crt"
    config = write_config(
        tmp_path, f"mqtt:\n  tls:\n    enabled: true\n    ca_certs: {missing}\nstats:\n  interval_s: 0\n"
    )
    (tmp_path / "photos").mkdir()
    args = daemon_args(config, tiny_model_path, str(tmp_path / "photos"), "--publish", "mqtt")
    result = run_daemon(args + ([mode] if mode != "start" else []), timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"error: mqtt.tls.ca_certs: file {missing} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("broken", ["ca_not_a_certificate", "key_of_another_certificate"])
def test_unusable_tls_files_fail_check_config_naming_the_key(tmp_path, tiny_model_path, pki, broken):
    """Files that exist but cannot be loaded: --check-config must fail the way the start would."""
    files, _ = pki
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("this is not a certificate\n")
    if broken == "ca_not_a_certificate":
        tls, key = f"    ca_certs: {not_pem}\n", "mqtt.tls.ca_certs"
    else:  # the client certificate with the server's key
        tls = f"    ca_certs: {files.ca_cert}\n    certfile: {files.client_cert}\n    keyfile: {files.server_key}\n"
        key = "mqtt.tls.certfile"
    config = write_config(tmp_path, f"mqtt:\n  tls:\n    enabled: true\n{tls}stats:\n  interval_s: 0\n")
    args = daemon_args(config, tiny_model_path, str(tmp_path), "--publish", "mqtt", "--check-config")
    result = run_daemon(args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"error: {key}: " in result.stderr and "config OK" not in result.stderr
    assert "Traceback" not in result.stderr


def test_forget_over_mutual_tls_and_a_clear_error_for_an_untrusted_broker(mtls_broker, pki):
    from edge.config import Config
    from edge.publish.forget import ForgetError, forget

    files, other_ca = pki
    client_files = {"certfile": str(files.client_cert), "keyfile": str(files.client_key)}
    # The daemon's publisher leaves a retained state and, closing, a retained `offline`.
    publisher = _publisher(mtls_broker, ca_certs=str(files.ca_cert), **client_files)
    with _subscriber(mtls_broker, pki) as sub:
        publisher.start()
        try:
            sub.wait_topic(f"{BASE}/status", b"online", timeout=10)
            publisher.publish_state({"face_count": 0})
            sub.wait_topic(f"{BASE}/state", timeout=10)
        finally:
            publisher.close(timeout=2)
        sub.wait_topic(f"{BASE}/status", b"offline", timeout=10)

    def config(ca_certs) -> Config:
        tls = TlsConfig(enabled=True, ca_certs=str(ca_certs), **client_files)
        return Config(
            device_id=DEVICE, mqtt=MqttConfig(host=mtls_broker.host, port=mtls_broker.port, tls=tls)
        )

    with pytest.raises(ForgetError, match="cannot connect to the MQTT broker .*certificate verify failed"):
        forget(config(other_ca), timeout=5)
    result = forget(config(files.ca_cert), timeout=5)
    assert sorted(result.cleared) == [f"{BASE}/state", f"{BASE}/status"]
    with _subscriber(mtls_broker, pki) as sub:
        assert sub.retained() == {}
