"""Shared pytest fixtures. Several helpers append here: keep sections separate and imports local."""

from __future__ import annotations

import importlib.abc
import sys
from pathlib import Path

import pytest

# Test helpers are imported as `tests.<module>` (tests/support/fakefaces.py, tests/support/tinymodel.py, ...): make that work
# however pytest is started (`python -m pytest` adds the cwd, the `pytest` script does not).
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)


# --- models (vision helper) -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A trained full-int8 7-class `tiny.tflite` with its `tiny.json` contract: the checked-in
    tests/data/tiny.tflite (made by tests/data/make_tiny_model.py), copied to a session temp folder.

    Needs no TensorFlow, so edge tests run in `make test-fast` and on a base install.
    """
    from tests.support.tinymodel import checked_in_copy

    return checked_in_copy(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def trained_tiny_model_path(tmp_path_factory):
    """The same recipe (tests/support/tinymodel.py) trained and converted now: needs TensorFlow, takes seconds."""
    pytest.importorskip("tensorflow")
    from tests.support.tinymodel import tiny_tflite

    return tiny_tflite(tmp_path_factory.mktemp("tiny_model_trained"))


# --- MQTT broker (daemon helper) ------------------------------------------------------------------------
@pytest.fixture
def mosquitto(tmp_path):
    """A real Mosquitto broker on a free 127.0.0.1 port (testbed/mosquitto.py), stopped after the test.

    Skips only when the binary is not installed (`.ci/run` installs it): `apt install mosquitto`.
    """
    from testbed.mosquitto import MosquittoBroker, find_mosquitto

    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto; .ci/run installs it)")
    broker = MosquittoBroker(binary, tmp_path).start()
    try:
        yield broker
    finally:
        broker.stop()


# --- the fast loop (`make test-fast`) ---------------------------------------------------------------------
# The suite as a base install (the Pi) sees it: the Keras stack cannot be imported, so test modules that need
# it skip at their `pytest.importorskip("keras")`, and an edge test that pulled TensorFlow in would fail.
# Tests marked slow (training, converting), fer (the real data set), backoff (waiting out reconnect
# backoffs) or long (the 20 s fuzz budget, the real browser) are deselected. `make test` runs them all.
FAST_BLOCKED = ("tensorflow", "keras", "tf_keras", "jax", "torch")


class _Unimportable(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in FAST_BLOCKED:
            raise ModuleNotFoundError(
                f"No module named {name!r} (pytest --fast: as on a base install)", name=name
            )
        return None


def pytest_addoption(parser):
    parser.addoption(
        "--fast",
        action="store_true",
        help="the quick loop: skip slow, fer, backoff and long tests; make TensorFlow/Keras/JAX/torch unimportable",
    )


def pytest_configure(config):
    if not config.getoption("--fast"):
        return
    sys.meta_path.insert(0, _Unimportable())
    chosen = config.option.markexpr
    skipped = "not slow and not fer and not backoff and not long"
    config.option.markexpr = skipped + (f" and ({chosen})" if chosen else "")
