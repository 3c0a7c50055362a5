"""The ``ranks`` line of ``lowrank show`` and the console's status pane: every node of a
data-parallel run with its ranks and their pids, from status.json."""

from __future__ import annotations

from types import SimpleNamespace

from console.commands.show import show_text
from console.ranks_text import ranks_line
from console.tui.detail import status_text

TWO_NODES = {"world_size": 2, "nnodes": 2, "rank_pids": [11, 12],
             "nodes": [{"node": "nodeB", "host": "vm", "node_rank": 0, "agent_pid": 5, "ranks": [0], "pids": [11]},
                       {"node": "nodeA", "host": "vm", "node_rank": 1, "agent_pid": 6, "ranks": [1], "pids": [12]}]}


def test_two_nodes_name_each_node_rank_and_pid():
    assert ranks_line(TWO_NODES) == "2 ranks on 2 nodes: nodeB rank 0 (pid 11); nodeA rank 1 (pid 12)"


def test_one_node_of_two_ranks_and_a_run_not_yet_started():
    one = {"world_size": 2, "nodes": [{"node": "vm", "ranks": [0, 1], "pids": [7, 8]}]}
    assert ranks_line(one) == "2 ranks: vm ranks 0 (pid 7), 1 (pid 8)"
    assert ranks_line({"world_size": 4, "nnodes": 2, "rank_pids": None}) == "4 ranks on 2 nodes (not all started yet)"
    assert ranks_line({"world_size": 2, "rank_pids": [3, 4]}) == "2 ranks: pids 3, 4"  # an older record
    assert ranks_line({"world_size": 1}) is None and ranks_line({}) is None and ranks_line({"world_size": True}) is None


def test_show_and_the_console_print_it():
    info = SimpleNamespace(name="r", run_id="r", path="/x", state_shown="running", state="running", epoch=1,
                           epochs=2, elapsed_s=1.0, eta_s=None, error=None, last_loss=0.1, best_err1=2.5, model="m",
                           dataset="d", method="dense", budget=None)
    line = "2 ranks on 2 nodes: nodeB rank 0 (pid 11); nodeA rank 1 (pid 12)"
    assert any(row.startswith("ranks ") and row.endswith(line) for row in show_text(info, dict(TWO_NODES)).splitlines())
    assert any(row.startswith("ranks") and row.endswith(line) for row in status_text(
        SimpleNamespace(info=info, status=dict(TWO_NODES))).plain.splitlines())
