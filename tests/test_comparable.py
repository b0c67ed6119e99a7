"""What must match across a comparison (SharedConfig.comparable_digest) apart from a run's identity (seed, rounds,
what bounds memory), enforced where tables are built: benchmarks.table (MLflow) and benchmarks.collect (sidecars)."""
import dataclasses
import json

import pytest

from benchmarks import collect as collect_mod
from benchmarks import table
from g2rpo.config import PER_RUN, SharedConfig, assert_same_shared
from g2rpo.loop import trained_meta
from g2rpo.presets import preset
from g2rpo.registry import make_method


def test_runs_across_seeds_and_rounds_compare():
    a = preset("pocket").shared
    b = dataclasses.replace(a, seed=a.seed + 1, rounds=a.rounds + 7, max_batch=3, max_train_batch=2,
                            gradient_checkpointing=True, compile=not a.compile)
    assert a.digest() != b.digest() and a.comparable_digest() == b.comparable_digest()
    assert assert_same_shared({"g2rpo seed 0": a, "flowgrpo seed 1": b}) == a.comparable_digest()
    assert set(PER_RUN) == {"seed", "rounds", "max_batch", "max_train_batch", "gradient_checkpointing", "compile"}


@pytest.mark.parametrize("change, field", [({"num_steps": 7}, "num_steps"),
                                          ({"rewards": {"brightness": 1.0, "redness": 1.0}}, "rewards"),
                                          ({"lora": "flowgrpo-flux"}, "lora")])
def test_runs_with_other_comparable_settings_are_refused_naming_the_field(change, field):
    a = SharedConfig()
    b = dataclasses.replace(a, seed=1, **change)  # the seed differs too: it is not named
    with pytest.raises(ValueError) as e:
        assert_same_shared({"a": a, "b": b})
    msg = str(e.value)
    assert msg.startswith(f"runs do not share settings ({field} differ from 'a';") and "\n" not in msg, msg


def test_comparable_digests_are_stable_and_recorded_with_each_run():
    # pinned: sidecars and MLflow tags record these; a field added to SharedConfig goes to ADDED_LATER to keep them
    assert SharedConfig().comparable_digest() == "112b2a20b74e"
    assert SharedConfig(lora="").comparable_digest() == SharedConfig(gradient_checkpointing=True).comparable_digest()
    shared = preset("smoke").shared
    meta = trained_meta(make_method("g2rpo", preset("smoke").knobs), shared, shared.rounds)
    assert meta["comparable_digest"] == shared.comparable_digest() and meta["shared_digest"] == shared.digest()


# benchmarks.table: child runs of one parent run, built directly in a temporary MLflow store


def make_store(tmp_path, blocks: list[dict]):
    import mlflow

    from g2rpo.tracking import flatten

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("g2rpo-bench/test", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp, tags={"kind": "parent"}).info.run_id
    ids = []
    for i, block in enumerate(blocks):
        method = block.pop("method", "g2rpo")
        run = client.create_run(exp, tags={"kind": "child", "mlflow.parentRunId": parent, "method": method,
                                           "variant": "default", "seed": str(block.get("seed", i))})
        for k, v in flatten({"shared": block}).items():
            client.log_param(run.info.run_id, k, v)
        ids.append(run.info.run_id)
    return uri, client, exp, ids


def test_table_refuses_child_runs_with_other_comparable_settings(tmp_path, capsys):
    base = dataclasses.asdict(preset("smoke").shared)
    old = {k: v for k, v in base.items() if k not in ("lora", "gradient_checkpointing")}  # recorded before they existed
    blocks = [base | {"seed": 0}, base | {"seed": 1, "rounds": 9, "max_batch": 4, "method": "flowgrpo"},
              old | {"seed": 2}, base | {"seed": 3, "num_steps": base["num_steps"] + 1, "method": "dancegrpo"}]
    uri, client, exp, ids = make_store(tmp_path, [dict(b) for b in blocks[:3]])
    _, df = table.load_runs(client, exp, None)  # across seeds, rounds and a run that predates lora: accepted
    assert len(df) == 3

    uri, client, exp, ids = make_store(tmp_path / "mixed", [dict(b) for b in blocks])
    out = tmp_path / "mixed" / "tables"
    capsys.readouterr()
    assert table.main(["--tracking-uri", uri, "--experiment", "g2rpo-bench/test", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: runs flowgrpo:default:seed1") and err.count("\n") == 1, err  # the common block's
    assert f"and dancegrpo:default:seed3 ({ids[3]}) do not share settings (num_steps differ)" in err, err
    assert not out.exists()  # refused before anything was written


# benchmarks.collect: evaluation folders and checkpoint sidecars, written directly


def evaluation(root, name, side: dict | None):
    """An eval.evaluate folder of 2 prompts x 1 image scoring the checkpoint whose sidecar is ``side`` (None: base)."""
    folder = root / name
    folder.mkdir(parents=True)
    ck = "base"
    if side is not None:
        ck = str(root / f"{name}.safetensors")
        (root / f"{name}.json").write_text(json.dumps(side))
    meta = [{"prompt_index": i, "prompt": f"p{i}", "image_index": 0, "seed": 0, "steps": 3, "shift": 3.0,
             "checkpoint": ck + (" sha256:0" if side else ""), "tier": "tiny"} for i in range(2)]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    (folder / "scores.csv").write_text("prompt_index,image_index,brightness\n0,0,0.5\n1,0,0.25\n")
    (folder / "summary.csv").write_text("reward,mean\nbrightness,0.375\n")
    return folder


def sidecar(method, shared: SharedConfig, recorded=True):
    side = trained_meta(make_method(method, preset("smoke").knobs), shared, shared.rounds)
    if not recorded:  # written before the comparable digest existed
        del side["comparable_digest"]
    return json.loads(json.dumps(side))


def test_collect_refuses_models_trained_with_other_comparable_settings(tmp_path, capsys):
    sh = preset("smoke").shared
    more_steps = dataclasses.replace(sh, num_steps=sh.num_steps + 1)
    f = {"base": evaluation(tmp_path, "base", None),
         "g0": evaluation(tmp_path, "g0", sidecar("g2rpo", sh)),
         "d1": evaluation(tmp_path, "d1", sidecar("dancegrpo", dataclasses.replace(sh, seed=1, rounds=5))),
         "old": evaluation(tmp_path, "old", sidecar("flowgrpo", sh, recorded=False)),
         "steps": evaluation(tmp_path, "steps", sidecar("mixgrpo", more_steps)),
         "bf16": evaluation(tmp_path, "bf16", sidecar("mixgrpo", dataclasses.replace(sh, precision="bf16"), False))}
    df, *_ = collect_mod.collect([f["base"], f["g0"], f["d1"], f["old"]])  # seeds, rounds, an older sidecar: accepted
    assert len(df) == 4
    for bad, says in (("steps", "(comparable digests"), ("bf16", "(settings.precision differ)")):
        out = tmp_path / f"t-{bad}"
        assert collect_mod.main([str(f["base"]), str(f["g0"]), str(f["old"]), str(f[bad]), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {f[bad]}: its model was trained with other shared settings than {f['g0']}'s")
        assert says in err and err.count("\n") == 1 and not out.exists(), err
