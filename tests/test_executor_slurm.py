"""executor.kind=slurm run for real: the dedup stage as sbatch job arrays on a one-node Slurm started here
(tests/slurm_cluster.py) gives the same output bytes as the local executor, as test_executor does for Ray.

Needs Debian's slurmctld, slurmd, slurm-client and munge (what slurm-wlm depends on) and root (slurmd runs
jobs as their user). Skipped with the reason without them; GPT_REPRO_REQUIRE_SLURM=1 (set by .ci/run)
makes a missing or failed cluster an error."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import slurm_cluster
from conftest import skip_unless_required
from pipeline.core import executor
from test_executor import make_inputs, run_in


def _unavailable(reason: str):
    skip_unless_required(reason, "GPT_REPRO_REQUIRE_SLURM")


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """A running one-node cluster for this module; its env (SLURM_CONF) for the client commands."""
    if slurm_cluster.missing():
        _unavailable(f"slurm binaries {slurm_cluster.missing()} are absent (apt-get install slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        _unavailable("the throwaway Slurm cluster runs its daemons as root; this test is not root")
    root = tmp_path_factory.mktemp("slurm")
    try:
        with slurm_cluster.start(root) as env:
            yield env
    except slurm_cluster.ClusterError as e:
        _unavailable(str(e))


def test_cluster_runs_srun_and_a_job_array(slurm_env, tmp_path):
    slurm_cluster.smoke(slurm_env, tmp_path)


def test_slurm_executor_gives_identical_output(slurm_env, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    inputs = make_inputs(tmp_path)
    local = run_in(tmp_path / "local", monkeypatch, inputs, executor.ExecutorConfig())
    cfg = executor.ExecutorConfig(kind="slurm", workers=2, slurm_partition=slurm_cluster.PARTITION)
    on_slurm = run_in(tmp_path / "slurm", monkeypatch, inputs, cfg)
    # the stages really went through sbatch: every pass left a launch script and per-task Slurm logs
    scripts = sorted((tmp_path / "slurm" / "data").rglob("launch_script.slurm"))
    assert len(scripts) >= 5 and all(any(s.parent.glob("slurm_logs/*_*.out")) for s in scripts)
    assert on_slurm == local and any("removed/duplicate" in k for k in local)


def test_failed_task_raises_instead_of_waiting(slurm_env, tmp_path, monkeypatch):
    """A task that dies leaves no completion marker: run raises with the log folder, it does not hang."""
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the job unpickles _fail from this module
    monkeypatch.chdir(tmp_path)
    cfg = executor.ExecutorConfig(kind="slurm", workers=2, slurm_partition=slurm_cluster.PARTITION)
    with pytest.raises(RuntimeError, match="2 of 2 tasks did not complete"):
        executor.run([_fail], 2, tmp_path / "logs", cfg, poll_s=2)
    logs = [p.read_text() for p in (tmp_path / "logs" / "slurm_logs").glob("*_*.out")]
    assert len(logs) == 2 and all("fails on purpose" in t for t in logs)
    out = subprocess.run(["squeue", "-h"], env=slurm_env, capture_output=True, text=True)
    assert out.stdout.strip() == ""


def _fail(data, rank: int = 0, world_size: int = 1):
    raise ValueError(f"task {rank} fails on purpose")
