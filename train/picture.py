"""A picture of what a run trains on: augmented training crops per class and source, with the class counts.

One row per class, one block of columns per source (FER-2013, the --photos train half, ...). Each cell is a
few crops of that class and source after the run's own augmentation and degradations (train/pipeline.py's
settings, through the numpy pipeline, which makes the same batches as tf.data; mixup and the teacher are left
out, so each crop is one image). The row titles give each source's image count of that class and, with soft
labels, the class's share of the training targets. Written as RUN_DIR/training_crops.png.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from train.metrics import _pyplot, _save_figure

PER_CELL = 6  # crops shown per class and source


def cell_crops(images, labels, settings, per_cell: int = PER_CELL, seed: int = 0) -> np.ndarray:
    """float32 (n, H, W) augmented crops of up to `per_cell` of `images` (one class of one source)."""
    from train.pipeline_numpy import NumpyTrainBatches

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), min(per_cell, len(images)), replace=False))
    # Its own seed per cell: with one seed every cell would draw the same augmentations column by column.
    cell = replace(settings, batch_size=len(chosen), mixup=0.0, teacher=None, initial_epoch=0, seed=seed)
    batch = NumpyTrainBatches(images[chosen], labels[chosen], cell, workers=1)[0][0]
    return batch[..., 0]


def write_training_picture(path, data, settings, seed: int = 0, per_cell: int = PER_CELL) -> dict:
    """Draw the grid for a train.train.RunData; returns the counts drawn in it: {source: {label: images}}."""
    plt = _pyplot()
    labels = data.labels
    counts, cells = {}, {}
    start = 0
    for name, count in data.sources:
        part = slice(start, start + count)
        start += count
        images, targets = data.train.images[part], data.train.labels[part]
        counts[name] = {label: int(np.sum(targets == c)) for c, label in enumerate(labels)}
        for c in range(len(labels)):
            members = np.flatnonzero(targets == c)
            if len(members):
                cell_seed = seed + 100 * len(cells) + c
                cells[name, c] = cell_crops(images[members], targets[members], settings, per_cell, cell_seed)
    share = None
    if data.train_targets is not None:
        mass = np.asarray(data.train_targets).sum(axis=0)
        share = mass / mass.sum()
    sources = [name for name, _ in data.sources]
    columns = per_cell * len(sources)
    fig, axes = plt.subplots(
        len(labels), columns, figsize=(0.9 * columns + 1.5, 1.05 * len(labels) + 0.6), squeeze=False
    )
    try:
        for c, label in enumerate(labels):
            for s, name in enumerate(sources):
                crops = cells.get((name, c), np.zeros((0, 1, 1)))
                for j in range(per_cell):
                    ax = axes[c, s * per_cell + j]
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if j < len(crops):
                        ax.imshow(crops[j], cmap="gray", vmin=0, vmax=255)
                    else:
                        ax.axis("off")
                    if j == 0:
                        ax.set_title(f"{name}: {counts[name][label]:,}", fontsize=7, loc="left")
            title = label + (f"\n{share[c]:.1%} of targets" if share is not None else "")
            axes[c, 0].set_ylabel(title, fontsize=8, rotation=0, ha="right", va="center")
        fig.suptitle(
            f"training crops after augmentation ({', '.join(f'{n} {sum(counts[n].values()):,}' for n in sources)})",
            fontsize=9,
        )
        _save_figure(fig, Path(path))
    finally:
        plt.close(fig)
    return counts
