"""Bad input to every command: one line on stderr starting with 'error: ', exit code 2, no traceback, nothing written,
nothing process-wide changed. The cases are ``benchmarks.reliability.BAD_INPUT`` (its report runs them through the real
entry points); here each command's ``main`` runs in-process, for speed."""
import importlib
import os

import pytest
import torch

from benchmarks.reliability import BAD_INPUT, case_id, invocation, make_fixtures, written


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-input")
    return tmp, make_fixtures(tmp)


@pytest.fixture
def mlflow_uri():
    """open_store sets mlflow's process-wide tracking URI (and MLFLOW_TRACKING_URI): put both back."""
    from mlflow.tracking._tracking_service import utils

    saved, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    yield
    utils._tracking_uri = saved
    if env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = env


@pytest.mark.parametrize("command,name,args,expected", BAD_INPUT, ids=map(case_id, BAD_INPUT))
def test_bad_input_is_one_line_exit_2_before_any_work(command, name, args, expected, fixtures, capsys, monkeypatch,
                                                      mlflow_uri):
    tmp, keys = fixtures
    monkeypatch.chdir(tmp)  # default output folders (results/...) land here too
    before, threads = written(tmp), torch.get_num_threads()
    rc = importlib.import_module(command).main(invocation(command, args, keys))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert expected.format(**keys) in lines[0]
    assert written(tmp) == before, "a rejected invocation wrote files"
    assert torch.get_num_threads() == threads, "threads set before the flags were checked"


def test_a_spool_the_recorder_wrote_passes_the_checks_and_syncs(tmp_path, mlflow_uri):
    """The checks refuse what replay could not apply, not what Recorder writes: an outage after the parent run was
    created, children started, logged and ended during it."""
    import mlflow

    from benchmarks import sync
    from g2rpo.recorder import Recorder

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp_id = client.create_experiment("g2rpo-bench/smoke")
    spool = tmp_path / "offline" / "s.jsonl"
    rec = Recorder(client, exp_id, spool, "g2rpo-bench/smoke")
    rec.start("parent", "invocation", {"kind": "parent"})
    rec.failure = "store unreachable"  # from here on every record is spooled
    (tmp_path / "table.csv").write_text("a\n1\n")
    rec.start("child", "g2rpo:default:seed0", {"kind": "child"}, parent="parent")
    rec.params("child", {"lr": "1e-4"})
    rec.metrics("child", {"loss": 0.5}, step=0)
    rec.artifact("child", tmp_path / "table.csv", "tables")
    rec.end("child")
    rec.metrics("parent", {"wall_s": 1.0})
    assert sync.main([str(spool), "--tracking-uri", uri]) == 0
    (child,) = client.search_runs([exp_id], "tags.kind = 'child'")
    assert child.data.tags["mlflow.parentRunId"] == rec.ids["parent"] and child.data.metrics["loss"] == 0.5
