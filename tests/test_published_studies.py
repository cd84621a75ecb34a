"""The studies published under ``docs/studies/<name>/`` (``python -m ms_transfer.study --publish``): each holds what
a reader needs to check it (the results with the command, versions and CPU that produced them, the table, the
plot), and what the README shows of the demo is that published run."""
import json
from pathlib import Path

import pytest

from ms_transfer.study import headline

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = sorted(p for p in (ROOT / "docs" / "studies").iterdir() if p.is_dir())


def test_the_demo_and_every_study_are_published():
    assert {p.name for p in PUBLISHED} >= {"demo", "fashion_to_mnist", "digit_adder", "digit_adder_seed_head"}


@pytest.mark.parametrize("study", PUBLISHED, ids=lambda p: p.name)
def test_a_published_study_says_what_produced_it(study):
    assert {"results.json", "results.md", "study.png"} <= {p.name for p in study.iterdir()}
    results = json.loads((study / "results.json").read_text())
    made = results["provenance"]
    assert made["command"].startswith("python -m ms_transfer.study --config ")
    assert made["versions"]["mindspore"] and made["versions"]["torch"] and made["cpu"]
    # the table is the one the results make: every group's mean in results.md
    table = (study / "results.md").read_text()
    assert all(f"{g['mean']:.3f} ± {g['std']:.3f} (n={g['n']})" in table for g in results["groups"].values())


def test_the_readme_shows_the_published_demo():
    results = json.loads((ROOT / "docs" / "studies" / "demo" / "results.json").read_text())
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in (ROOT / "docs" / "studies" / "demo" / "results.md").read_text().splitlines()
            if line.startswith("| ")]
    assert rows and all(row in readme for row in rows)
    line = headline(results)
    assert line and line in readme
