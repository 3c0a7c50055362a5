"""Bad values for a run on several nodes are refused in one line (exit 2, ``error: ...`` naming the
flag, and a hint) before anything is created under LOWRANK_HOME or submitted to Slurm:
``--nodes 0``, more nodes than the partition has, ``--nodes`` on a local run, ``--nnodes 0``,
``--node-rank`` outside ``0..N-1``, a ``--master`` that is not HOST:PORT or does not resolve, a
run directory the other machines cannot see, and the flag combinations that cannot mean anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from console.backends import nodes as by_hand
from console.cli import main
from lowrank.errors import UserError

REPO = Path(__file__).resolve().parents[2]
QUICK = str(REPO / "presets" / "quickstart.yaml")


def snapshot(home: Path) -> set[str]:
    return {str(path.relative_to(home)) for path in home.rglob("*")} if home.exists() else set()


@pytest.fixture
def refused(tmp_path, monkeypatch, capsys):
    """``refused(*args)``: the real entry point in-process; asserts exit 2, one ``error:`` line on
    stderr, no traceback and nothing new under LOWRANK_HOME; returns that line."""
    home = tmp_path / "home"
    monkeypatch.setenv("LOWRANK_HOME", str(home))
    monkeypatch.delenv("LOWRANK_SLURM_SHARED", raising=False)
    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> str:
        before = snapshot(home)
        monkeypatch.setattr(sys, "argv", ["lowrank", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if line.strip()]
        assert exit_info.value.code == 2 and len(lines) == 1, (args, exit_info.value.code, out, err)
        assert lines[0].startswith("error: ") and "Traceback" not in out + err, lines
        assert snapshot(home) == before, f"{args}: created {sorted(snapshot(home) - before)}"
        return lines[0]

    return call


BY_HAND = ["run", QUICK, "--cpu"]


@pytest.mark.parametrize("args, flag, words", [
    (["--nnodes", "0"], "--nnodes", "at least 1"),
    (["--nnodes", "-3", "--node-rank", "0", "--master", "127.0.0.1:29500"], "--nnodes", "at least 1"),
    (["--nnodes", "2", "--node-rank", "2", "--master", "127.0.0.1:29500"], "--node-rank", "0..1"),
    (["--nnodes", "2", "--node-rank", "-1", "--master", "127.0.0.1:29500"], "--node-rank", "0..1"),
    (["--nnodes", "2", "--master", "127.0.0.1:29500"], "--node-rank", "needs --node-rank"),
    (["--nnodes", "2", "--node-rank", "0"], "--master", "needs --master"),
    (["--node-rank", "1", "--master", "127.0.0.1:29500"], "--nnodes", "give --nnodes"),
    (["--nnodes", "2", "--node-rank", "0", "--master", "nosuchhost.invalid:29500"], "--master", "does not resolve"),
    (["--nnodes", "2", "--node-rank", "0", "--master", "127.0.0.1"], "--master", "not HOST:PORT"),
    (["--nnodes", "2", "--node-rank", "0", "--master", "127.0.0.1:70000"], "--master", "1..65535"),
    (["--nnodes", "2", "--node-rank", "0", "--master", "127.0.0.1:port"], "--master", "1..65535"),
    (["--nnodes", "2", "--node-rank", "0", "--master", "127.0.0.1:29500", "--detach"], "--detach", "foreground"),
    (["--nnodes", "2", "--node-rank", "0", "--master", "127.0.0.1:29500", "--nodes", "2"], "--nodes", "one of them"),
    (["--nnodes", "2", "--node-rank", "0", "--master", "127.0.0.1:29500", "--backend", "slurm"], "--nnodes",
     "--nodes N"),
])
def test_by_hand_bad_values(refused, args, flag, words):
    line = refused(*BY_HAND, *args)
    assert flag in line and words in line, line


def test_a_node_that_joins_is_refused_the_same_before_waiting(refused):
    """Node 1's bad --master is refused at once, not after waiting for node 0."""
    line = refused(*BY_HAND, "--nnodes", "2", "--node-rank", "1", "--master", "nosuchhost.invalid:29500")
    assert "--master" in line and "does not resolve" in line


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_run_directory_the_other_machines_cannot_see(refused, rank):
    """LOWRANK_HOME under /tmp with a master that is not a loopback address: the machines differ."""
    line = refused(*BY_HAND, "--nnodes", "2", "--node-rank", rank, "--master", "10.255.0.1:29500")
    assert "LOWRANK_HOME" in line and "local to this machine" in line and "shared filesystem" in line, line


def test_nodes_zero_and_nodes_on_a_local_run(refused):
    assert "at least 1" in refused("run", QUICK, "--backend", "slurm", "--nodes", "0")
    line = refused("run", QUICK, "--nodes", "2")  # the quickstart runs locally
    assert "--nodes 2" in line and "backend is local" in line and "--backend slurm" in line, line
    line = refused("compare", QUICK, "--methods", "dense", "--nodes", "2")
    assert "--nodes 2" in line and "backend is local" in line, line
    line = refused("tune", QUICK, "--space", "train.lr=log:0.01:0.1", "--trials", "2", "--nodes", "2")
    assert "--nodes 2" in line and "--backend slurm" in line, line
    assert "at least 1" in refused("compare", QUICK, "--methods", "dense", "--backend", "slurm", "--nodes", "0")


def test_the_parsed_rendezvous():
    found = by_hand.parse(2, 1, "localhost:29500")
    assert (found.nnodes, found.node_rank, found.port, found.on_this_machine) == (2, 1, 29500, True)
    assert found.torchrun_args() == ["--nnodes", "2", "--node-rank", "1", "--master-addr", "localhost",
                                     "--master-port", "29500"]
    assert found.log_name() == "output.node1.log" and by_hand.parse(2, 0, "localhost:29500").log_name() == "output.log"
    assert by_hand.parse(2, 0, "[::1]:29500").master == "[::1]:29500"
    assert not by_hand.parse(2, 0, "10.255.0.1:29500").on_this_machine
    assert by_hand.parse(None, None, None) is None and by_hand.parse(1, 0, None) is None  # one machine
    with pytest.raises(UserError):
        by_hand.parse(2, 0, "[::1]29500")


@pytest.mark.slurm
@pytest.mark.subprocess
def test_more_nodes_than_the_partition_has_submits_nothing(refused, tmp_path):
    """`multi` has two nodes (nodeA, nodeB): three are refused with sinfo's count, and no job is queued."""
    def queued() -> list[str]:
        return subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True,
                              check=True).stdout.split()

    before = queued()
    preset = tmp_path / "slurm.yaml"
    preset.write_text(Path(QUICK).read_text() + "\nslurm: {partition: multi, time: 5}\n")
    line = refused("run", str(preset), "--backend", "slurm", "--nodes", "3")
    assert "slurm.nodes is 3" in line and "partition multi has 2 node(s) (nodeA, nodeB)" in line, line
    line = refused("compare", str(preset), "--methods", "dense", "--backend", "slurm", "--nodes", "3")
    assert "slurm.nodes is 3" in line, line
    line = refused("tune", str(preset), "--space", "train.lr=log:0.01:0.1", "--trials", "2", "--backend", "slurm",
                   "--nodes", "3")
    assert "slurm.nodes is 3" in line and "partition multi has 2 node(s)" in line, line
    assert queued() == before


def test_a_sweep_on_two_nodes_plans_every_run_with_slurm_nodes(tmp_path, monkeypatch, capsys):
    """``compare --nodes 2 --backend slurm --dry-run``: every planned run carries slurm.nodes=2."""
    import json

    monkeypatch.setenv("LOWRANK_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "argv", ["lowrank", "compare", QUICK, "--methods", "dense,generic", "--budgets", "0.5",
                                      "--backend", "slurm", "--nodes", "2", "--dry-run", "--json"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    plan = json.loads(capsys.readouterr().out)
    assert "slurm.nodes=2" in plan["overrides"] and not (tmp_path / "home").exists()
