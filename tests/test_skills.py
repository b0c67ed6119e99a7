"""The scenes task's statistics: flat groups, GenEval's overall, the paired interval, the skills table, the leaderboard."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import leaderboard, skills
from g2rpo.advantages import flat_group_share
from g2rpo.pocket import scenes
from g2rpo.pocket.verifier import geneval_summary, skill_means

NAN = float("nan")


def test_a_group_is_flat_only_when_every_reward_is_constant_in_it():
    group = torch.tensor([0, 0, 1, 1, 2, 2])
    a = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.5])
    b = torch.tensor([0.0, 0.0, 3.0, 3.0, 0.1, 0.2])
    assert flat_group_share({"a": a}, group) == pytest.approx(2 / 3)
    assert flat_group_share({"a": a, "b": b}, group) == pytest.approx(1 / 3)  # group 2 varies in b


def test_non_finite_rewards_are_left_out_and_one_finite_value_is_flat():
    group = torch.tensor([0, 0, 0, 1, 1])
    a = torch.tensor([1.0, NAN, 1.0, NAN, 0.3])
    assert flat_group_share({"a": a}, group) == 1.0
    assert flat_group_share({"a": torch.tensor([0.0, 1.0, NAN, 2.0, 2.0])}, group) == 0.5
    assert flat_group_share({"a": torch.tensor([])}, torch.tensor([], dtype=torch.long)) == 0.0


PROMPTS = ["a photo of a circle", "a photo of a square", "a photo of two stars", "a photo of three crosses",
           "a photo of four circles"]


def test_overall_is_the_mean_of_skill_means_not_of_prompts():
    idx = skills.skill_index(PROMPTS)
    assert list(idx) == ["single_object", "counting"]
    x = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    assert skills.overall(x, idx) == pytest.approx(0.5)  # prompt mean would be 0.4
    got = skill_means(PROMPTS, x)
    assert got == {"single_object": 1.0, "counting": 0.0, "overall": 0.5}
    s = geneval_summary(PROMPTS, {"scenes_strict": torch.tensor(x)})
    assert s == {"geneval/single_object": 1.0, "geneval/counting": 0.0, "geneval/overall": 0.5}


def test_paired_overall_of_a_constant_shift_is_that_shift_with_a_zero_width_interval():
    idx = skills.skill_index(PROMPTS)
    base = np.array([0.0, 0.5, 0.25, 1.0, 0.0])
    same = np.stack([base, base])
    assert skills.paired_overall(same, base, idx, n_boot=200) == pytest.approx((0.0, 0.0, 0.0))
    d, lo, hi = skills.paired_overall(same + 0.1, base, idx, n_boot=200)
    assert (d, lo, hi) == pytest.approx((0.1, 0.1, 0.1))


def test_paired_overall_interval_covers_its_point_and_widens_with_disagreeing_seeds():
    idx = skills.skill_index(PROMPTS)
    base = np.zeros(5)
    agree = np.array([[1, 0, 1, 0, 1], [1, 0, 1, 0, 1]], dtype=float)
    split = np.array([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=float)
    _, lo_a, hi_a = skills.paired_overall(agree, base, idx, n_boot=500)
    d, lo_s, hi_s = skills.paired_overall(split, base, idx, n_boot=500)
    assert lo_s <= d <= hi_s
    assert hi_s - lo_s > 0.5  # seeds that disagree wholly leave the difference unresolved


def frames(values, prompts):
    return [pd.DataFrame({"prompt": prompts, "scenes_strict": v}) for v in values]


def test_skills_table_rows_cells_and_csv(tmp_path):
    held = scenes.prompts("heldout")
    n = len(held)
    base = np.zeros(n)
    better = np.ones(n)
    ind = scenes.prompts("indist")
    df = pd.DataFrame({"method": ["base", "g2rpo", "g2rpo"], "variant": "default", "seed": [0, 0, 1],
                       "nfe_per_round": [math.nan, 636.0, 636.0], "cost/total_nfe": [0, 100.0, 100.0]})
    files = skills.skills_table(df, {"base": frames([base], held), "g2rpo": frames([better, better], held)},
                                {"base": frames([np.zeros(len(ind))], ind), "g2rpo": frames([np.ones(len(ind))] * 2, ind)},
                                {"g2rpo": 0.25}, {"base": "Base model", "g2rpo": "G2RPO"}, tmp_path)
    assert {f.name for f in files} == {"table1_skills.md", "table1_skills.csv", "table1_skills.tex"}
    raw = pd.read_csv(tmp_path / "table1_skills.csv").set_index("method")
    assert raw.loc["g2rpo", "heldout_overall"] == 1.0 and raw.loc["base", "heldout_overall"] == 0.0
    assert raw.loc["g2rpo", "delta_heldout"] == 1.0 and raw.loc["g2rpo", "delta_lo"] == 1.0
    assert raw.loc["g2rpo", "indist_overall"] == 1.0 and raw.loc["g2rpo", "flat_groups"] == 0.25
    assert "heldout/single_object" not in raw  # no held-out prompt of that skill
    assert "indist/single_object" in raw
    md = (tmp_path / "table1_skills.md").read_text()
    assert "+1.000 [+1.000, +1.000]" in md and "1.000 ± 0.000" in md


def test_accuracy_table_interpolates_the_crossing_and_counts_seeds_that_never_reach_it(tmp_path):
    from benchmarks.table import crossing

    cf = pd.DataFrame({"method": "g2rpo", "seed": [0, 0, 0, 1, 1, 1], "round": [0, 4, 8] * 2,
                       "cum_nfe": [0, 400, 800] * 2, "wall_s": [0, 10, 20] * 2,
                       "heldout/scenes_strict": [0.2, 0.4, 0.6, 0.2, 0.3, 0.4]})
    skills.accuracy_table(cf, 0.5, crossing, {"g2rpo": "G2RPO"}, tmp_path)
    md = (tmp_path / "time_to_accuracy.md").read_text()
    assert "| G2RPO | 1/2 | 600 | 15 | 6 |" in md


def test_leaderboard_reads_each_folders_own_table(tmp_path):
    d = tmp_path / "scenes"
    d.mkdir()
    (d / "README.md").write_text("# Benchmark results: preset `scenes`\n\nMade by:\n\n```bash\npython -m benchmarks.run\n```\n")
    pd.DataFrame([{"method": "base", "heldout_overall": 0.2},
                  {"method": "g2rpo", "heldout_overall": 0.4, "delta_heldout": 0.2, "delta_lo": 0.1, "delta_hi": 0.3,
                   "nfe_per_round": 636}]).to_csv(d / "table1_skills.csv", index=False)
    (tmp_path / "empty").mkdir()
    text = leaderboard.build(tmp_path).read_text()
    assert "| G²RPO | 0.400 | +0.200 [+0.100, +0.300] | 636 |" in text
    assert "preset `scenes`" in text and "empty" not in text
    assert leaderboard.main(["--results", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("args,msg", [
    (["render", "a photo of two stars", "--seed", "1.5", "--out", "x.png"], "--seed must be an integer"),
    (["render", "two dogs", "--out", "x.png"], "not a scenes prompt"),
    (["prompts", "--skill", "count"], "unknown skill"),
    (["prompts", "--split", "test"], "split must be one of"),
    (["verify", "missing.png", "--prompt", "a photo of a star"], "not a readable image"),
])
def test_scenes_cli_refuses_bad_input_in_one_line(args, msg, capsys, tmp_path, monkeypatch):
    from benchmarks.scenes import main

    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()


def test_scenes_cli_render_then_verify_passes(capsys, tmp_path):
    from benchmarks.scenes import main

    assert main(["render", "a photo of a red circle left of a blue square", "--out", str(tmp_path / "s.png")]) == 2
    capsys.readouterr()
    assert main(["render", "a photo of a circle left of a square", "--seed", "7", "--out", str(tmp_path / "s.png")]) == 0
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "s.png"), "--prompt", "a photo of a circle left of a square"]) == 0
    out = capsys.readouterr().out
    assert '"strict": true' in out and '"position": 1.0' in out


def test_interleaved_prompts_cover_every_skill_first_and_restrict_keeps_one_skill():
    from g2rpo.tier import Tier
    from g2rpo.tiers import check_skills, interleave, restrict

    held = interleave(scenes.prompts("heldout"), scenes.skill_of)
    assert sorted(held) == sorted(scenes.prompts("heldout"))
    first = {scenes.skill_of(p) for p in held[:5]}
    assert first == {scenes.skill_of(p) for p in held}  # the first n (the curve set) hold every skill
    t = Tier("pocket-scenes", None, None, {}, scenes.prompts("train"), held, indist_prompts=scenes.prompts("indist"))
    check_skills("pocket-scenes", ("counting", "position"))
    r = restrict(t, ("counting", "position"))
    for ps, full in ((r.train_prompts, t.train_prompts), (r.eval_prompts, t.eval_prompts),
                     (r.indist_prompts, t.indist_prompts)):
        assert ps and ps == [p for p in full if scenes.skill_of(p) in ("counting", "position")]
    assert restrict(t, ()) is t
    for model, skill, msg in (("pocket-scenes", "colour", "unknown skill"), ("pocket", "counting", "only the scenes"),
                              ("pocket-scenes", "single_object", "heldout split empty")):
        with pytest.raises(ValueError, match=msg) as e:
            check_skills(model, (skill,))
        assert "\n" not in str(e.value)
