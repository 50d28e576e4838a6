"""Start-up says what runs, nothing alarming: the native libraries' own chatter on stderr (LiteRT's "Created
delegate" INFO line, TensorFlow's CUDA and oneDNN notes on a CPU-only machine) is held back, while their
warnings and errors, and every line of ours, still reach stderr."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge.logs import native_stderr_filtered
from testbed.daemonproc import REPO, daemon_env


def test_native_lines_are_filtered_and_everything_else_passes(capfd):
    with native_stderr_filtered(lambda line: line.startswith(b"INFO: ")):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")  # as C++ writes it
        os.write(2, b"ERROR: a real failure of the runtime\n")
        os.write(2, b"a line of ours\n")  # as the log sink writes (edge.logs.stream_writer)
        os.write(2, b"INFO: without a newline at the end")
    os.write(2, b"INFO: after the block nothing is filtered\n")
    assert capfd.readouterr().err == (
        "ERROR: a real failure of the runtime\na line of ours\nINFO: after the block nothing is filtered\n"
    )


def test_an_exception_inside_still_restores_stderr(capfd):
    with pytest.raises(RuntimeError), native_stderr_filtered(lambda line: True):
        os.write(2, b"held and dropped\n")
        raise RuntimeError("boom")
    os.write(2, b"stderr is back\n")
    assert capfd.readouterr().err == "stderr is back\n"


def _daemon_stderr(*extra: str) -> str:
    command = [sys.executable, "-m", "edge.cli", "--source", "edge/samples", "--publish", "stdout", *extra]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=daemon_env(), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) == 2  # both sample photos made their event
    return result.stderr


def test_the_daemons_start_up_has_no_runtime_chatter():
    """`emotion-edge --source edge/samples --publish stdout`, as `make run` and a new user run it."""
    lines = _daemon_stderr().splitlines()
    assert not [line for line in lines if "XNNPACK" in line or line.startswith("INFO:")], lines
    assert all(" INFO edge." in line for line in lines), lines  # only the daemon's own, in its format
    assert any("classifier: default.tflite" in line for line in lines)
    # The runtime does print it: at DEBUG it is let through, so it is the filter that holds it back.
    verbose = _daemon_stderr("--log-level", "DEBUG")
    if "via ai-edge-litert" in verbose:
        assert "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in verbose


@pytest.mark.slow
def test_tensorflow_starts_without_its_cuda_and_onednn_notes():
    pytest.importorskip("tensorflow")
    code = (
        "from train.tf_startup import quiet_tensorflow_startup; quiet_tensorflow_startup();"
        "import tensorflow as tf; print(tf.reduce_sum(tf.ones(3)).numpy())"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0 and result.stdout == "3.0\n", result.stderr[-2000:]
    noise = ("absl::InitializeLog", "oneDNN", "cuda drivers", "cudart_stub")
    assert not [line for line in result.stderr.splitlines() if any(n in line for n in noise)], result.stderr
    if not any(name.startswith("nvidia") for name in os.listdir("/dev")):
        assert "cuInit" not in result.stderr
    # Unfiltered, TensorFlow says it all (so the test above is about the filter, not a quiet build).
    loud = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True,
                          cwd=REPO, env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"}, timeout=300)  # fmt: skip
    assert any(n in loud.stderr for n in noise), loud.stderr[-2000:]
