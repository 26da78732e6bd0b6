"""Smoke tests of the benchmark suite: the cheap parts, with --quick budgets.

The full measurements live in `benchmarks/` (see benchmarks/README.md); these
only check that the machinery runs and reports sane numbers.
"""

from __future__ import annotations

import json

from benchmarks import common, flop_ceiling


def test_stats_ratio_and_table():
    s = common.stats([3.0, 1.0, 2.0])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert common.fmt_stats(s, ".1f") == "2.0 [1.0-3.0]"
    assert common.ratio({"median": 4.0, "n": 1}, s) == 2.0
    assert common.fmt_ratio(common.ratio(s, common.stats([]))) == "-"
    table = common.markdown_table(("a", "b"), [(1, 2)])
    assert table.splitlines() == ["| a | b |", "| --- | --- |", "| 1 | 2 |"]


def test_flop_counts_by_hand():
    raw = {
        "env": {"num_envs": 4},
        "agent": {"hidden": [64, 64], "num_steps": 128, "update_epochs": 4,
                  "num_minibatches": 4},
    }  # fmt: skip
    f = flop_ceiling.ppo_flops(raw)
    actor = 2 * (4 * 64 + 64 * 64 + 64 * 2)  # 8,960
    critic = 2 * (4 * 64 + 64 * 64 + 64 * 1)  # 8,832
    assert f["act"] == actor + critic == 17_792
    assert f["bootstrap_value"] == critic
    # Backward: 2x forward, less the first layer's input gradient.
    backward = 2 * (actor + critic) - 2 * (2 * 4 * 64)
    assert f["train_fwd_bwd"] == 4 * (actor + critic + backward)
    assert f["params"] == (4 * 64 + 64 + 64 * 64 + 64) * 2 + 64 * 2 + 2 + 64 + 1


def test_flop_ceiling_quick(tmp_path, capsys):
    out_json = tmp_path / "flop.json"
    flop_ceiling.main(
        ["--quick", "--json", str(out_json), "--throughput", str(tmp_path / "none")]
    )
    printed = capsys.readouterr().out
    assert "total kFLOP / env step" in printed and "GFLOP/s" in printed
    data = json.loads(out_json.read_text())
    assert data["benchmark"] == "flop_ceiling"
    assert data["machine"]["cores"] >= 1
    assert data["ceiling_gflops"] > 0
    assert all(v > 0 for v in data["matmul_gflops"].values())
    for f in data["flops_per_env_step"].values():
        assert f["total"] > f["train_fwd_bwd"] > f["act"] > 0
    # XLA's count adds only biases and activations to the matmuls.
    for check in data["xla_check"].values():
        assert check["analytic"] <= check["xla"] <= 1.05 * check["analytic"]
