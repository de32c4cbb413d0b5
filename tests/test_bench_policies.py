"""marl bench policies: the grid of policies x densities x drone counts x obstacle sizes, its table and plot."""

from __future__ import annotations

import argparse
import json

import pytest

from marl.bench.policies import METRICS, add_arguments, bench_policies, markdown_table, plot_policies, run

SHORT = dict(episodes=2, episode_seconds=1.0)


def test_grid_rows_metrics_and_same_episodes_for_every_policy():
    result = bench_policies(("pid", "pid_avoid", "pid"), densities=(0.2, 0.6), obstacle_sizes=(0.6, 0.8), drones=(3,),
                            **SHORT)
    rows = result["rows"]
    assert len(rows) == 2 * 2 * 3
    for r in rows:
        assert set(METRICS) <= set(r)
        assert 0.0 <= r["success_rate"] <= 1.0 and r["time_to_goal"] > 0
        total = r["success_rate"] + r["collision_rate"] + r["deadlock_rate"]
        assert total == pytest.approx(1.0)
    # pid listed twice flies the same episodes (same seed and maps): identical figures
    for i in range(0, len(rows), 3):
        first, _, again = rows[i : i + 3]
        assert {k: first[k] for k in METRICS} == {k: again[k] for k in METRICS}
    assert {(r["obstacle_size"], r["density"]) for r in rows} == {(0.6, 0.2), (0.6, 0.6), (0.8, 0.2), (0.8, 0.6)}
    assert result["settings"]["layout"] == "reference" and result["settings"]["episodes"] == 2


def test_table_and_plot(tmp_path):
    result = bench_policies(("pid", "sbc"), densities=(0.2, 0.4), drones=(2,), **SHORT)
    table = markdown_table(result).splitlines()
    assert len(table) == 2 + 4 and table[0].startswith("| policy") and "time to goal" in table[0]
    assert any(line.startswith("| sbc | sim | 2 | 0.60 | 0.40 |") for line in table)
    path = plot_policies(result, tmp_path / "img" / "p.png")
    assert (tmp_path / "img" / "p.png").stat().st_size > 1000 and path.endswith("p.png")


@pytest.mark.parametrize(
    "kwargs, field",
    [({"densities": (1.2,)}, "densities"), ({"backends": ("gazebo",)}, "backends"), ({"drones": (0,)}, "drones"),
     ({"obstacle_sizes": (1.5,)}, "obstacle_sizes"), ({"policies": ()}, "policies")],
)
def test_bad_grid_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        bench_policies(**kwargs)


def test_cli_shell_writes_json_and_plot(tmp_path, capsys):
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--policies", "pid", "--densities", "0.2", "--drones", "2", "--episodes", "1",
                         "--episode-seconds", "0.5", "--layout", "rows", "--json", str(tmp_path / "r.json"),
                         "--plot", str(tmp_path / "r.png")])
    assert run(args) == 0
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["settings"]["layout"] == "rows" and len(saved["rows"]) == 1
    assert (tmp_path / "r.png").exists()
    assert "| pid | sim | 2 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        p.parse_args(["--densities", "a,b"])
