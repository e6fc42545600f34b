"""executor.* is output-neutral: the dedup stage gives byte-identical outputs with 1 or 2 local workers
and on a local Ray; the params.yaml section matches ExecutorConfig. Slurm is run for real in test_executor_slurm.py."""
from __future__ import annotations

import importlib.util
import random

import pytest
import yaml
from datatrove.data import Document

from pipeline.core import executor, io, params, records
from pipeline.curate import dedup

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
WORDS = [f"w{i}" for i in range(2000)]


def make_inputs(root) -> dict:
    """Two shards per source (so two workers really split the tasks), with cross-source near-duplicates."""
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(300)) for _ in range(12)]
    inputs = {}
    for s, source in enumerate((records.WEBTEXT, records.CC)):
        inputs[source] = root / "in" / source
        for shard in range(2):
            docs = []
            for k in range(6):
                t = texts[(6 * shard + k + s) % 12]
                if source == records.CC and k % 2:  # near copies of WebText pages (odd k), exact ones (even k)
                    t = "changed " + t
                url = f"http://{source}{shard}-{k}.test/"
                make = records.webtext_id if source == records.WEBTEXT else records.cc_id
                docs.append(Document(text=t, id=make(url), metadata={records.SOURCE: source, records.URL: url}))
            with io.doc_writer(inputs[source]) as w:
                for d in docs:
                    w.write(d, shard)
    return inputs


def run_in(cwd, monkeypatch, inputs, ecfg) -> dict:
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)  # own data/resume: no completion of another run is reused
    dedup.run(dedup.DedupConfig(), 1337, inputs, "out", ecfg=ecfg)
    return {str(p.relative_to(cwd / "out")): io.sha256_file(p) for p in sorted((cwd / "out").rglob("*")) if p.is_file()}


def test_config_defaults_match_params_yaml():
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["executor"]
    assert params.build(executor.ExecutorConfig, section) == executor.ExecutorConfig()


def test_worker_count_changes_no_output_hash(tmp_path, monkeypatch):
    inputs = make_inputs(tmp_path)
    one = run_in(tmp_path / "w1", monkeypatch, inputs, executor.ExecutorConfig(workers=1))
    two = run_in(tmp_path / "w2", monkeypatch, inputs, executor.ExecutorConfig(workers=2))
    assert len(io.shard_paths(inputs[records.CC])) == 2 and any("removed/duplicate" in k for k in one)
    assert any("removed/exact_duplicate" in k for k in one)
    assert one == two


def test_unknown_kind_and_slurm_without_partition_fail(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        executor.build([], 1, tmp_path, executor.ExecutorConfig(kind="spark"))
    with pytest.raises(ValueError, match="partition"):
        executor.build([], 1, tmp_path, executor.ExecutorConfig(kind="slurm"))
    slurm = executor.build([], 4, tmp_path, executor.ExecutorConfig(kind="slurm", workers=2, slurm_partition="cpu"))
    assert (slurm.tasks, slurm.workers, slurm.partition) == (4, 2, "cpu")


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install ray==2.60.0)")
def test_ray_executor_gives_identical_output(tmp_path, monkeypatch):
    import ray

    inputs = make_inputs(tmp_path)
    local = run_in(tmp_path / "local", monkeypatch, inputs, executor.ExecutorConfig())
    try:
        on_ray = run_in(tmp_path / "ray", monkeypatch, inputs, executor.ExecutorConfig(kind="ray", workers=2))
    finally:
        ray.shutdown()
    assert on_ray == local


def test_a_task_without_its_completion_marker_fails_the_run(tmp_path, monkeypatch):
    """run() checks every task's completion marker whatever the kind (Slurm did already): work that landed
    elsewhere must fail the stage, not leave it with empty outputs. And the logging dir is made absolute."""
    built = {}

    def build(pipeline, tasks, logging_dir, cfg):
        built["dir"] = logging_dir
        ex = executor.LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, logging_dir=str(logging_dir))
        ex.run = lambda: None  # "ran" elsewhere: no marker here
        return ex

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(executor, "build", build)
    with pytest.raises(RuntimeError, match="2 of 2 tasks did not complete"):
        executor.run([], 2, "logs")
    assert built["dir"] == tmp_path / "logs"



def test_a_stats_file_emptied_by_a_kill_is_rebuilt_on_the_rerun(tmp_path):
    """A kill -9 while datatrove wrote the merged stats.json left it empty; the rerun found every task
    complete, so datatrove skipped writing it and the stage reading it failed (seen in the e2e kill test).
    run() now rebuilds it from the per-task stats each time, atomically."""
    from datatrove.pipeline.filters import LambdaFilter

    docs = [Document(text=f"doc {i}", id=str(i)) for i in range(10)]
    pipe = [docs, LambdaFilter(lambda d: int(d.id) % 3 == 0)]
    logs = tmp_path / "logs"
    executor.run(pipe, 1, logs)
    whole = (logs / "stats.json").read_bytes()
    assert b'"dropped"' in whole
    (logs / "stats.json").write_bytes(b"")  # what the kill left
    executor.run(pipe, 1, logs)  # every task complete: datatrove itself writes nothing
    assert (logs / "stats.json").read_bytes() == whole
