"""The shared-filesystem check of ``--backend slurm`` (console.backends.slurm.shared_fs), with a
stand-in ``sinfo`` on PATH: a home local to this machine is refused unless every node of the
partition the job goes to is this machine; a known network filesystem passes; another one warns."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lowrank.errors import UserError

from console.backends.slurm import shared_fs


FAKE_SINFO = r"""#!/usr/bin/env python3
# sinfo over a fixed node table (lines 'host|partition', '*' marks the default): --Node,
# --partition=P[,Q] and the format fields %n (hostname), %N (node), %P (partition), %D (count)
import sys
nodes = [line.split("|") for line in __NODES__]
args = sys.argv[1:]
fmt = next((a.split("=", 1)[1] for a in args if a.startswith("--format=")), "%P %D")
part = next((a.split("=", 1)[1] for a in args if a.startswith("--partition=")), None)
if part:
    nodes = [(n, p) for n, p in nodes if p.rstrip("*") in part.split(",")]
rows = [[(n, p)] for n, p in nodes] if "--Node" in args or "-N" in args else \
    [[(n, p) for n, p in nodes if p == q] for q in dict.fromkeys(p for _, p in nodes)]
for row in rows:
    out = fmt
    for key, value in (("%n", row[0][0]), ("%N", ",".join(n for n, _ in row)), ("%P", row[0][1]),
                       ("%D", str(len(row)))):
        out = out.replace(key, value)
    print(out)
"""


@pytest.fixture
def sinfo(tmp_path, monkeypatch):
    """Make ``sinfo`` answer from the given node table (lines ``host|partition``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def nodes(*lines: str) -> None:
        script = bin_dir / "sinfo"
        script.write_text(FAKE_SINFO.replace("__NODES__", repr(list(lines))))
        script.chmod(0o755)

    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv(shared_fs.SHARED_ENV, raising=False)
    return nodes


ME = socket.gethostname()


@pytest.mark.subprocess
def test_a_one_node_partition_on_another_machine_cannot_see_a_local_home(sinfo, tmp_path):
    sinfo("gpu01|debug*")
    with pytest.raises(UserError) as error:
        shared_fs.check_shared(tmp_path / "home", None)  # under /tmp (or tmpfs): local to this machine
    assert "the Slurm job's nodes cannot see it" in str(error.value) and error.value.key == "LOWRANK_HOME"


@pytest.mark.subprocess
def test_a_partition_of_this_machine_alone_shares_its_files(sinfo, tmp_path):
    sinfo(f"{ME}|debug*", "gpu01|gpu")
    assert shared_fs.check_shared(tmp_path / "home", None) is None  # the default partition: this host
    with pytest.raises(UserError):
        shared_fs.check_shared(tmp_path / "home", "gpu")  # the named one is elsewhere
    with pytest.raises(UserError):
        shared_fs.check_shared(tmp_path / "home", "debug,gpu")  # sbatch's list: any node of either


@pytest.mark.subprocess
def test_a_fully_qualified_node_name_of_this_machine_counts(sinfo, tmp_path):
    sinfo(f"{ME.split('.')[0]}.cluster.example|debug*")
    assert shared_fs.check_shared(tmp_path / "home", None) is None


@pytest.mark.subprocess
def test_several_nodes_need_a_network_filesystem(sinfo, monkeypatch):
    sinfo(f"{ME}|debug*", "node2|debug*")
    home = Path("/work/lab/lowrank")
    monkeypatch.setattr(shared_fs, "filesystem_type", lambda path: "nfs4")
    assert shared_fs.check_shared(home, None) is None
    monkeypatch.setattr(shared_fs, "filesystem_type", lambda path: "ext4")
    warning = shared_fs.check_shared(home, None)
    assert warning and "not on a known network filesystem" in warning and shared_fs.SHARED_ENV in warning
    monkeypatch.setattr(shared_fs, "filesystem_type", lambda path: "tmpfs")
    with pytest.raises(UserError):
        shared_fs.check_shared(home, None)


def test_the_user_can_vouch_for_a_shared_home(sinfo, tmp_path, monkeypatch):
    sinfo("gpu01|debug*")
    monkeypatch.setenv(shared_fs.SHARED_ENV, "1")
    assert shared_fs.check_shared(tmp_path / "home", None) is None
