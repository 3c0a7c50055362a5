"""One line naming a data-parallel run's processes, for ``lowrank show`` and the console's detail:
how many ranks on how many nodes, and for each node its name, ranks and their pids (status.json's
``world_size``, ``nodes``, ``rank_pids``; pure text, no imports from the rest of the console)."""

from __future__ import annotations

from typing import Any, Mapping


def ranks_line(status: Mapping[str, Any]) -> str | None:
    """``2 ranks on 2 nodes: nodeB rank 0 (pid 26856), nodeA rank 1 (pid 26855)``; None for one process."""
    world = status.get("world_size")
    if not isinstance(world, int) or isinstance(world, bool) or world < 2:
        return None
    nodes = [node for node in status.get("nodes") or [] if isinstance(node, Mapping)]
    if nodes:
        parts = []
        for node in nodes:
            ranks = [f"{rank} (pid {pid})" for rank, pid in zip(node.get("ranks") or [], node.get("pids") or [])]
            label = "rank" if len(ranks) == 1 else "ranks"
            parts.append(f"{node.get('node') or node.get('host') or '?'} {label} {', '.join(ranks) or '?'}")
        where = f" on {len(nodes)} nodes" if len(nodes) > 1 else ""
        return f"{world} ranks{where}: " + "; ".join(parts)
    expected = status.get("nnodes")
    pids = [str(pid) for pid in status.get("rank_pids") or []]
    where = f" on {expected} nodes" if isinstance(expected, int) and expected > 1 else ""
    return f"{world} ranks{where}" + (f": pids {', '.join(pids)}" if pids else " (not all started yet)")
