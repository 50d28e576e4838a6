"""The documents' headline figures are the committed result files' numbers, and their links lead somewhere.

docs/headline.json names each headline figure's result file, key and format; README.md and MODEL_CARD.md say
them between `<!-- headline -->` markers. A figure typed by hand, left behind by a rerun, or quoted twice with
two values fails here, naming the figure and its source. Fast, no network: it reads only committed files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEADLINE = json.loads((REPO / "docs" / "headline.json").read_text())

# A measurement as the documents write one: a percentage, milliseconds, KiB, or a three-decimal F1.
MEASUREMENT = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?(?:%| ms\b| KiB\b)|0\.\d{3}\b)")
BLOCK = re.compile(r"<!-- headline -->\n(.*?)<!-- /headline -->", re.S)


def lookup(data, key: str):
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def figure_text(name: str) -> str:
    spec = HEADLINE["figures"][name]
    source = HEADLINE["sources"][spec["source"]]["file"]
    value = lookup(json.loads((REPO / source).read_text()), spec["key"])
    if "equals" in spec:
        assert value == spec["equals"], (
            f"{name}: {source} {spec['key']} is {value}, the documents say {spec['equals']}"
        )
    return spec["format"].format(value * spec["scale"] if "scale" in spec else value)


def headline_block(document: str) -> str:
    blocks = BLOCK.findall((REPO / document).read_text())
    assert len(blocks) == 1, f"{document}: expected one <!-- headline --> ... <!-- /headline --> block"
    return " ".join(blocks[0].split())  # lines joined, so a phrase may wrap


@pytest.mark.parametrize("document", sorted(HEADLINE["documents"]))
def test_every_headline_figure_is_its_result_file_s(document):
    block = headline_block(document)
    for name in HEADLINE["documents"][document]["figures"]:
        spec = HEADLINE["figures"][name]
        phrase = spec.get("phrase", "{}").format(figure_text(name))
        source = HEADLINE["sources"][spec["source"]]["file"]
        assert phrase in block, f"{document}: {name} should read {phrase!r} ({source}, {spec['key']})"


@pytest.mark.parametrize("document", sorted(HEADLINE["documents"]))
def test_the_headline_says_no_figure_without_a_source(document):
    allowed = {figure_text(name) for name in HEADLINE["documents"][document]["figures"]}
    stray = [m for m in MEASUREMENT.findall(headline_block(document)) if m not in allowed]
    assert not stray, f"{document}: headline figures without a source in docs/headline.json: {stray}"


def test_the_readme_quotes_no_measurement_outside_its_headline():
    """The README's other sections link to docs/benchmarks.md and MODEL_CARD.md instead of quoting figures,
    so there is one place a figure can go stale."""
    for document, spec in HEADLINE["documents"].items():
        if not spec["measurements_only_in_block"]:
            continue
        text = BLOCK.sub("", (REPO / document).read_text())
        text = re.sub(r"```.*?```", "", text, flags=re.S)  # commands and sample output are not claims
        stray = MEASUREMENT.findall(text)
        assert not stray, (
            f"{document}: measurements outside the headline block (link to their doc instead): {stray}"
        )


def test_the_figures_match_the_shipped_model():
    """The result files describe the file that ships: same size, same contract."""
    model = REPO / "edge" / "models" / "default.tflite"
    evaluation = json.loads((REPO / HEADLINE["sources"]["v3"]["file"]).read_text())
    assert evaluation["compare"]["model"]["size_bytes"] == model.stat().st_size
    contract = json.loads(model.with_suffix(".json").read_text())
    assert evaluation["compare"]["model"]["labels"] == contract["labels"]


# --- links -------------------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces
    to hyphens."""
    text = re.sub(r"[`*]|<[^>]+>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


DOCUMENTS = [
    "README.md",
    "MODEL_CARD.md",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md")),
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_links_and_anchors_resolve(document):
    path = REPO / document
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here (no network)
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(target)
            continue
        if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{document}: links that lead nowhere: {broken}"


def test_slug_follows_github():
    assert slug("MQTT & Home Assistant") == "mqtt--home-assistant"
    assert slug("Deploy on a Raspberry Pi (systemd)") == "deploy-on-a-raspberry-pi-systemd"
    assert slug("pi-check: the Pi install in emulation") == "pi-check-the-pi-install-in-emulation"
    assert slug("Train a model (`emotion-train`, workstation)") == "train-a-model-emotion-train-workstation"


def test_the_model_card_s_metrics_tables_are_the_result_files():
    """The v3 int8 column of MODEL_CARD.md's metrics tables, row by row."""
    lines = (REPO / "MODEL_CARD.md").read_text().splitlines()
    for start, names in HEADLINE["documents"]["MODEL_CARD.md"]["table_rows"].items():
        rows = [line for line in lines if line.startswith(f"| {start}")]
        assert len(rows) == 1, f"MODEL_CARD.md: expected one table row starting {start!r}, found {len(rows)}"
        last = rows[0].rstrip(" |").rsplit("|", 1)[1].strip().strip("*")
        expected = " / ".join(figure_text(name) for name in names)
        assert last == expected, (
            f"MODEL_CARD.md, row {start!r}: v3 int8 says {last!r}, the result files {expected!r}"
        )
