"""``lowrank compare ... --backend slurm``: a 2-method x 2-budget sweep is ONE Slurm job array
(one array job id, tasks _0.._3, one task per run), every run finishes on the cluster, and
``compare show`` reads the sweep as it does a local one."""

from __future__ import annotations

import json
import subprocess

import pytest

from slurm_helpers import cli, sacct_states, status, wait_left_queue, wait_state, write_preset

pytestmark = pytest.mark.slurm


@pytest.mark.slow
def test_sweep_is_one_job_array(home, tmp_path, slurm_home):
    env = slurm_home
    preset = write_preset(tmp_path, epochs=1, name="sweep")
    out = cli("compare", str(preset), "--methods", "generic,tt", "--budgets", "0.2,0.22", "--backend", "slurm",
              "--detach", "--json", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    launched = json.loads(out.stdout)
    run_ids = [run["run_id"] for run in launched["runs"]]
    assert len(run_ids) == 4
    recorded = [status(home, run_id) for run_id in run_ids]
    arrays = {entry["slurm_array_job_id"] for entry in recorded}
    assert len(arrays) == 1 and None not in arrays, arrays  # one sbatch, one array
    (array,) = arrays
    assert sorted(entry["slurm_job_id"] for entry in recorded) == [f"{array}_{task}" for task in range(4)]
    script = next((home / "slurm").rglob(f"{array}_submission.sh")).read_text()
    assert "#SBATCH --array=0-3%" in script

    for run_id in run_ids:
        assert wait_state(env, run_id, ("finished", "failed", "killed"), timeout=240)["state"] == "finished"
    for entry in recorded:  # the worker's finished comes a moment before the job's end
        wait_left_queue(entry["slurm_job_id"])
        assert "COMPLETED" in sacct_states(entry["slurm_job_id"])
    array_records = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", array,
                                    "--format=JobID,State"], capture_output=True, text=True, check=True).stdout
    assert sorted(line.split("|")[0] for line in array_records.splitlines()) == sorted(
        entry["slurm_job_id"] for entry in recorded)

    shown = cli("compare", "show", launched["sweep"], "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)["rows"]
    assert [(row["method"], row["budget"]) for row in rows] == [(m, b) for m in ("generic", "tt") for b in (0.2, 0.22)]
    assert all((row["finished"], row["runs"]) == (1, 1) and row["test_err1_mean"] is not None for row in rows)
