"""Shared pytest fixtures. Several helpers append here: keep sections separate and imports local."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Test helpers are imported as `tests.<module>` (tests/fakefaces.py, tests/tinymodel.py, ...): make that work
# however pytest is started (`python -m pytest` adds the cwd, the `pytest` script does not).
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)


# --- models (vision helper) -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A trained full-int8 7-class `tiny.tflite` with its `tiny.json` contract (tests/tinymodel.py).

    Built once per session (a few seconds; needs TensorFlow, which the dev env has).
    """
    from tests.tinymodel import tiny_tflite

    return tiny_tflite(tmp_path_factory.mktemp("tiny_model"))


# --- MQTT broker (daemon helper) ------------------------------------------------------------------------
@pytest.fixture
def mosquitto(tmp_path):
    """A real Mosquitto broker on a free 127.0.0.1 port (tests/mosquitto.py), stopped after the test.

    Skips only when the binary is not installed (`.ci/run` installs it): `apt install mosquitto`.
    """
    from tests.mosquitto import MosquittoBroker, find_mosquitto

    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto; .ci/run installs it)")
    broker = MosquittoBroker(binary, tmp_path).start()
    try:
        yield broker
    finally:
        broker.stop()
