"""examples/custom_agent.py (shown in the README) runs and learns."""

from __future__ import annotations

import importlib.util

from conftest import REPO


def test_custom_agent_example_learns():
    spec = importlib.util.spec_from_file_location(
        "custom_agent", REPO / "examples" / "custom_agent.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    returns = module.main(num_updates=200, seed=0)
    first, last = sum(returns[:20]) / 20, sum(returns[-20:]) / 20
    # A random CartPole policy lasts ~22 steps; 51k env steps of A2C triple it.
    assert first < 40 and last > 3 * first, (first, last)


def test_readme_shows_the_example_verbatim():
    import re

    readme = (REPO / "README.md").read_text()
    block = re.search(r"\(tested: it learns\):\n\n```python\n(.*?)```", readme, re.S)
    assert block and block.group(1) in (REPO / "examples/custom_agent.py").read_text()
