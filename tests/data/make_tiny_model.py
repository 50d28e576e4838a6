"""Make the checked-in test model: `tests/data/tiny.tflite` and its `tiny.json` contract.

    python tests/data/make_tiny_model.py        # needs TensorFlow (the [train] extra); seconds

Edge tests use these files as they are, so they run where TensorFlow is not installed (a Pi, `make test-fast`).
The model is tests/support/tinymodel.py's: a small int8 CNN trained on tests/support/fakefaces.py's generated faces, converted
the way emotion-convert does. Rerun this only when that recipe changes, and commit both files together.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # `tests.` and `edge.` from the repository, however it is started

from tests.support.tinymodel import CHECKED_IN, tiny_tflite  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        built = tiny_tflite(tmp)
        for source in (built, built.with_suffix(".json")):
            target = CHECKED_IN.with_suffix(source.suffix)
            shutil.copyfile(source, target)
            print(f"wrote {target.relative_to(HERE.parent.parent)} ({target.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
