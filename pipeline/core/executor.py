"""Which datatrove executor runs a data stage: params.yaml `executor` (local, ray or slurm).

DESIGN.md "Scaling past one machine": data stages are datatrove pipelines, so the engine that runs
their tasks is a setting, not code. The number of tasks is fixed by the data (one per input shard,
one per LSH band), never by `workers`, and every random draw is keyed by document id, so `executor.*`
changes no output byte; that is why dvc.yaml does not declare it (tests/test_executor.py proves it).

  local  LocalPipelineExecutor: `workers` processes on this machine (the default).
  ray    RayPipelineExecutor on the Ray cluster at `ray_address`; empty starts a local Ray with `workers`
         CPUs (`ray.init(num_cpus=workers, include_dashboard=False)`). Tasks must see the same files:
         on a cluster, the repo and data/resume on a shared filesystem.
  slurm  SlurmPipelineExecutor: one sbatch job array per pipeline, on `slurm_partition` with `slurm_time`;
         `run` submits, waits until the array has left `squeue`, fails if any task left no completion
         marker, and merges the per-task stats here, so a stage returns only when its outputs exist.
         Tasks run this repo's .venv with the repo on PYTHONPATH (both on a shared filesystem). Launch
         from a login node (datatrove: never from inside a job). Run for real on a one-node Debian
         slurm-wlm by tests/test_executor_slurm.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
from datatrove.utils.stats import PipelineStats

from pipeline.core import io

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("local", "ray", "slurm")


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
    """params.yaml `executor`: output-neutral, so read by stages but never declared in dvc.yaml."""

    kind: str = "local"
    workers: int = 1
    ray_address: str = ""
    slurm_partition: str = ""
    slurm_time: str = "1-00:00:00"  # days-hh:mm:ss: a bare 24:00:00 is a base-60 integer to YAML 1.1 readers


def build(pipeline: list, tasks: int, logging_dir: str | Path, cfg: ExecutorConfig = ExecutorConfig(),
          job_name: str = "gpt-repro"):
    """The datatrove executor of `cfg.kind` for `pipeline` split into `tasks` tasks.

    Args:
        pipeline: datatrove steps (reader first).
        tasks: number of tasks (ranks); fixed by the data, never by the worker count.
        logging_dir: datatrove logging dir (completions, stats.json); under the stage's work dir.
        cfg: params.yaml `executor`.
        job_name: Slurm job name.
    """
    tasks = max(1, int(tasks))
    workers = max(1, min(int(cfg.workers), tasks))
    if cfg.kind == "local":
        return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir))
    if cfg.kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        _ray_init(cfg)
        return RayPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir),
                                   cpus_per_task=1, mem_per_cpu_gb=1)
    if cfg.kind == "slurm":
        if not cfg.slurm_partition:
            raise ValueError("executor.kind=slurm needs executor.slurm_partition")
        # the job unpickles our steps, so `pipeline` must import there: the submitting shell's
        # PYTHONPATH rarely names the repo (pytest and `python stages/x.py` put it on sys.path only)
        env = f"source {ROOT / '.venv' / 'bin' / 'activate'} && export PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"
        return _Slurm(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir),
                      time=cfg.slurm_time, partition=cfg.slurm_partition, job_name=job_name, env_command=env)
    raise ValueError(f"executor.kind must be one of {KINDS}, got {cfg.kind!r}")


def _ray_init(cfg: ExecutorConfig) -> None:
    """Connect to (or start) Ray once per process; workers import `pipeline` through PYTHONPATH."""
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}}
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, runtime_env=env, log_to_driver=False)
    else:
        ray.init(num_cpus=max(1, cfg.workers), include_dashboard=False, runtime_env=env, log_to_driver=False)


class _Slurm(SlurmPipelineExecutor):
    """datatrove's SlurmPipelineExecutor without its stats-merging follow-up job: datatrove keeps no id
    for it, so nothing could wait for it, and a stage reading stats.json would race it; `run` merges."""

    def launch_merge_stats(self):
        pass


def run(pipeline: list, tasks: int, logging_dir: str | Path, cfg: ExecutorConfig = ExecutorConfig(),
        poll_s: float = 30.0) -> None:
    """Build the executor and run it to the end (for Slurm: submit, wait, check, merge stats)."""
    tasks = max(1, int(tasks))
    executor = build(pipeline, tasks, Path(logging_dir).resolve(), cfg)  # absolute: Ray workers have their own cwd
    executor.run()
    if cfg.kind == "slurm":
        _wait_slurm(executor, tasks, poll_s)
    else:
        _check_complete(executor, tasks, executor.logging_dir.path)
    _merge_stats(executor, tasks)


def _merge_stats(executor, tasks: int) -> None:
    """Write stats.json from the per-task stats, atomically, on every run. datatrove writes it in place
    and only when some task ran: a kill during that write left an empty stats.json that every rerun
    ("all tasks already completed") kept, and the stage reading it failed. Each task's own stats file is
    written before its completion marker, so after _check_complete all of them are whole."""
    stats = PipelineStats()
    for rank in range(tasks):
        with executor.logging_dir.open(f"stats/{rank:05d}.json", "rt") as f:
            stats += PipelineStats.from_json(json.load(f))
    with io.atomic_path(Path(executor.logging_dir.path) / "stats.json") as tmp, open(tmp, "w") as f:
        stats.save_to_disk(f)


def _check_complete(executor, tasks: int, where: str) -> None:
    """Raise unless every task left its completion marker: a task whose work landed anywhere else (another
    node's disk, another working directory) must fail the stage, not leave it with empty outputs."""
    missing = executor.get_incomplete_ranks(range(tasks))
    if missing:
        raise RuntimeError(f"{len(missing)} of {tasks} tasks did not complete (no completion marker; ranks "
                           f"{missing[:10]}); see {where}")


def _wait_slurm(executor, tasks: int, poll_s: float) -> None:
    """Wait until the job array leaves the queue (polls every 1 s, slowing to `poll_s`), raise if a task
    left no completion marker (run() then merges the per-task stats)."""
    job = str(executor.job_id)
    start = time.monotonic()
    while job != "-1":  # -1: every task had completed before, nothing was submitted
        queued = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True)
        # an id slurmctld has already purged answers "Invalid job id" (rc 1): gone, like an empty answer
        if not queued.stdout.strip() and (queued.returncode == 0 or "Invalid job id" in queued.stderr):
            break
        time.sleep(min(poll_s, 1 + (time.monotonic() - start) / 10))  # ~1 s for short jobs, 10% later on
    _check_complete(executor, tasks, f"slurm job {job}: {executor.slurm_logs_folder}")
