"""Training-step speed of an architecture under Keras dtype policies (float32 vs mixed_bfloat16) on this CPU.

Whether bf16 mixed precision pays depends on the CPU: without AMX, oneDNN runs bf16 convolutions through
AVX512_BF16 dot products where it has them, and converts dtypes around every other op. This builds the same
model once per policy, then times `train_on_batch` on one batch of random faces, alternating the policies in
rounds so both see the same load from other work on the machine; it reports the median step per policy.

    .venv/bin/python -m benchmarks.train_step_speed --arch vgg --batch-size 64 --steps 20 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(policy: str, arch: str, batch: int):
    import keras

    from train.model import make_model

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = make_model(arch, (48, 48, 1), 7)
        model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="categorical_crossentropy")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per policy per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--policy", action="append", help="Keras dtype policies (default float32, mixed_bfloat16)"
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    import numpy as np

    policies = args.policy or ["float32", "mixed_bfloat16"]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch_size, 48, 48, 1)).astype(np.float32)
    y = np.eye(7, dtype=np.float32)[rng.integers(0, 7, args.batch_size)]
    models = {p: build(p, args.arch, args.batch_size) for p in policies}
    for model in models.values():  # compile the step functions before timing
        for _ in range(3):
            model.train_on_batch(x, y)
    times = {p: [] for p in policies}
    for _ in range(args.rounds):
        for policy, model in models.items():
            for _ in range(args.steps):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times[policy].append(time.perf_counter() - start)
    result = {p: {"median_step_s": statistics.median(t), "steps": len(t)} for p, t in times.items()}
    base = result[policies[0]]["median_step_s"]
    for policy in policies:
        r = result[policy]
        print(
            f"{policy:16s} median step {r['median_step_s'] * 1000:7.1f} ms  ({base / r['median_step_s']:.2f}x of {policies[0]})"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"arch": args.arch, "batch_size": args.batch_size, **result}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
