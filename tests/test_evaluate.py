"""python -m eval.evaluate: generation with fixed noise, metadata, rescoring, in/out-of-domain split, bad input."""
import json

import pandas as pd
import pytest
import torch

from eval.evaluate import main
from g2rpo.checkpoint import save_policy
from g2rpo.models.flux import tiny_flux_policy


def run(tmp_path, *args):
    return main(["--tier", "tiny", "--steps", "3", "--threads", "1", "--out", str(tmp_path / "ev"), *args])


def test_base_generates_scores_and_rescoring_gives_the_same_numbers(tmp_path):
    assert run(tmp_path, "--images-per-prompt", "2") == 0
    ev = tmp_path / "ev"
    meta = [json.loads(x) for x in (ev / "metadata.jsonl").read_text().splitlines()]
    assert len(meta) == 8 and {m["image_index"] for m in meta} == {0, 1} and all((ev / m["image"]).is_file() for m in meta)
    summary = pd.read_csv(ev / "summary.csv")
    assert set(summary.domain) == {"out", "guard"}  # the base model was trained on nothing
    first = pd.read_csv(ev / "scores.csv")
    assert first.loc[first.image_index == 0, "brightness"].ne(first.loc[first.image_index == 1, "brightness"].values).any()
    assert main(["--rescore", "--threads", "1", "--out", str(ev)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(ev / "scores.csv"), first)


def test_checkpoint_from_the_runner_splits_in_and_out_of_domain(tmp_path):
    policy = tiny_flux_policy(0)
    with torch.no_grad():
        next(policy.parameters()).add_(0.05)  # a "trained" model differs from the base
    ck = save_policy(policy, tmp_path / "models" / "g2rpo-default-seed0.safetensors",
                     {"tier": "tiny", "in_domain": {"brightness": 1.0}, "method": "g2rpo"})
    assert run(tmp_path, "--checkpoint", str(ck), "--rewards", "brightness,contrast") == 0
    s = pd.read_csv(tmp_path / "ev" / "summary.csv").set_index("reward")
    assert s.loc["brightness", "domain"] == "in" and s.loc["contrast", "domain"] == "out" and "redness" not in s.index
    base = tmp_path / "base"
    assert main(["--tier", "tiny", "--steps", "3", "--threads", "1", "--out", str(base), "--rewards", "brightness"]) == 0
    assert pd.read_csv(base / "scores.csv").brightness.ne(pd.read_csv(tmp_path / "ev" / "scores.csv").brightness).any()


def test_a_lora_checkpoint_from_g2rpo_train_is_evaluated_as_it_was_trained(tmp_path):
    from benchmarks.train import main as train

    ck = tmp_path / "m" / "lora.safetensors"
    assert train(["--method", "flowgrpo", "--preset", "smoke", "--rounds", "1", "--lora", "flowgrpo-flux",
                  "--threads", "1", "--save", str(ck)]) == 0
    assert run(tmp_path, "--checkpoint", str(ck)) == 0  # refused as another architecture before the settings were kept


def test_recorded_settings_rebuild_the_trained_model(tmp_path):
    from eval.evaluate import load_model
    from g2rpo.loop import apply_model_settings
    from g2rpo.models.lora import adapter_parameters
    from g2rpo.models.text import HashTextEncoder

    settings = {"timestep_convention": "float", "precision": "fp32", "lora": "flowgrpo-flux"}
    policy = apply_model_settings(tiny_flux_policy(0), settings).eval()
    with torch.no_grad():  # a trained adapter: B != 0, so the adapted model differs from the base
        for n, p in adapter_parameters(policy).items():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    ck = save_policy(policy, tmp_path / "a.safetensors", {"tier": "tiny", "in_domain": {}, "settings": settings})
    _, loaded, _, _ = load_model(str(ck), "tiny")
    x, s, cond = torch.randn(2, *policy.latent_shape), torch.tensor([0.8, 0.3]), HashTextEncoder()(["a", "b"])
    with torch.no_grad():
        v, v_loaded, v_base = policy(x, s, cond), loaded(x, s, cond), tiny_flux_policy(0).eval()(x, s, cond)
    assert loaded.timestep_convention.value == "float"
    assert torch.equal(v_loaded, v) and (v_base - v).abs().max() > 1e-3


@pytest.mark.parametrize("args,msg", [
    (["--prompts", "/no/such/file.txt"], "neither heldout nor train nor a readable"),
    (["--rewards", "nope"], "--rewards: unknown ['nope']"),
    (["--rewards", "hps", "--reward-dir", "."], "/HPSv2/HPS_v2.1_compressed.pt is missing: expected HPS_v2.1_compressed.pt"),
    (["--rewards", "imagereward"], "'THUDM/ImageReward' is not a local path and the hub download failed"),
    (["--rewards", "clip", "--reward-dir", "/no/such/dir"], "--reward-dir /no/such/dir is not a folder"),
    (["--checkpoint", "/no/such.safetensors"], "is missing or unreadable"),
    (["--steps", "0"], "must be >= 1"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, msg):
    assert run(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and err.count("\n") == 1, err


def test_corrupt_checkpoint_is_refused(tmp_path, capsys):
    ck = save_policy(tiny_flux_policy(0), tmp_path / "m.safetensors", {"tier": "tiny", "in_domain": {}})
    ck.write_bytes(ck.read_bytes()[:100])
    assert run(tmp_path, "--checkpoint", str(ck)) == 2
    assert "is unreadable" in capsys.readouterr().err


def test_prompt_files_json_hpdv2_and_hpsv2_styles_are_grouped(tmp_path):
    styles = tmp_path / "benchmark"
    styles.mkdir()
    for i, s in enumerate(("anime", "concept-art", "paintings", "photo")):
        (styles / f"{s}.json").write_text(json.dumps([f"style {s} prompt {k}" for k in range(i + 1)]))
    assert run(tmp_path, "--prompts", str(styles)) == 0
    summary = pd.read_csv(tmp_path / "ev" / "summary.csv")
    b = summary[summary.reward == "brightness"].set_index("group")
    assert b.loc["all", "n"] == 10 and [b.loc[s, "n"] for s in ("anime", "concept-art", "paintings", "photo")] == [1, 2, 3, 4]
    hpd = tmp_path / "test.json"  # HPDv2's test.json: objects with a 'prompt' field
    hpd.write_text(json.dumps([{"prompt": "a cat", "rank": [1, 2]}, {"prompt": "a dog", "rank": [2, 1]}]))
    assert run(tmp_path, "--prompts", str(hpd)) == 0
    meta = [json.loads(x) for x in (tmp_path / "ev" / "metadata.jsonl").read_text().splitlines()]
    assert [m["prompt"] for m in meta] == ["a cat", "a dog"] and {m["group"] for m in meta} == {"test"}
    assert set(pd.read_csv(tmp_path / "ev" / "summary.csv").group) == {"all"}


@pytest.mark.parametrize("content,msg", [
    ("[]", "expected a non-empty JSON list"),
    ('[{"caption": "x"}]', "item 0 is neither a prompt string nor an object with a 'prompt'"),
    ("{not json", "is not readable JSON"),
])
def test_bad_json_prompts_are_one_line(tmp_path, capsys, content, msg):
    (tmp_path / "p.json").write_text(content)
    assert run(tmp_path, "--prompts", str(tmp_path / "p.json")) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1, err


def test_hpsv2_folder_missing_a_style_is_named(tmp_path, capsys):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "photo.json").write_text('["a"]')
    assert run(tmp_path, "--prompts", str(tmp_path / "bench")) == 2
    assert "missing anime, concept-art, paintings" in capsys.readouterr().err


def test_a_checkpoint_trained_in_another_tier_setting_is_refused(tmp_path, monkeypatch, capsys):
    """Tier.settings (resolution, prompt files) are recorded beside the weights; evaluating where the environment gives
    other ones fails in one line naming them, instead of silently scoring another setting."""
    from g2rpo import tiers

    policy = tiny_flux_policy(0)
    meta = {"tier": "tiny", "in_domain": {"brightness": 1.0}, "tier_settings": {"resolution": "8", "eval_prompts": "ab"}}
    ck = save_policy(policy, tmp_path / "m.safetensors", meta)
    tiny = tiers.LOADERS["tiny"]
    monkeypatch.setitem(tiers.LOADERS, "tiny", lambda: _with_settings(tiny(), resolution="8", eval_prompts="ab"))
    assert run(tmp_path, "--checkpoint", str(ck)) == 0  # the same setting: evaluated
    monkeypatch.setitem(tiers.LOADERS, "tiny", lambda: _with_settings(tiny(), resolution="16", eval_prompts="ab"))
    assert run(tmp_path, "--checkpoint", str(ck)) == 2
    err = capsys.readouterr().err.strip()
    assert "resolution=8" in err and "resolution=16" in err and "eval_prompts" not in err and "\n" not in err


def _with_settings(tier, **settings):
    tier.settings = settings
    return tier
