"""The README's notebook example runs as written and learns."""

from __future__ import annotations

import re

from conftest import REPO


def test_readme_notebook_example_runs():
    text = (REPO / "README.md").read_text()
    block = re.search(r"## In a notebook\n\n```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 14
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # our own file, not user input
    metrics = namespace["metrics"]
    assert float(metrics["loss"]) < 0.5  # from ~2.3 (10 classes) at initialisation
