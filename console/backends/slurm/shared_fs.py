"""Is the run directory somewhere every node of the partition can read and write?

The job's worker writes its status, metrics and checkpoints into the run directory from a
compute node, so ``LOWRANK_HOME`` must be on a filesystem the nodes share. No program can
prove that from the login node; what can be seen is checked: on a partition with more than
one node, a home on a memory or node-local filesystem (tmpfs, ramfs, /tmp, /var/tmp,
/dev/shm) is refused, and one on a filesystem that is not a known network filesystem gets
a warning -- unless every node of the partition is this host (a one-node cluster on the
machine itself shares everything with itself; a one-node partition elsewhere does not).
``LOWRANK_SLURM_SHARED=1`` says "it is shared" and skips the check (a /tmp that really is a
cluster mount).
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import psutil

from lowrank.errors import UserError

SHARED_ENV = "LOWRANK_SLURM_SHARED"
LOCAL_ONLY_TYPES = frozenset({"tmpfs", "ramfs", "devtmpfs", "overlay", "squashfs"})
LOCAL_ONLY_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
NETWORK_TYPES = frozenset({"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "cephfs",
                           "glusterfs", "fuse.glusterfs", "fuse.sshfs", "9p", "afs", "panfs", "wekafs", "fuse.ceph",
                           "fuse.juicefs", "virtiofs", "vast"})


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (the longest mount point above it)."""
    path = Path(path).resolve()
    best, kind = "", None
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint.rstrip("/") or "/"
        if (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
            best, kind = mount, part.fstype
    return kind


def partition_hosts(partition: str | None) -> list[str] | None:
    """The hostnames of the partition's nodes (None: the default partition), per ``sinfo``; None if unknown.

    ``partition`` may name several (``gpu,cpu``), as sbatch allows."""
    argv = ["sinfo", "--noheader", "--Node", "--format=%n|%P"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    wanted = {name.strip() for name in partition.split(",")} if partition else None
    hosts = set()
    for line in out.splitlines():
        host, _, part = line.strip().partition("|")
        if host and (part.endswith("*") if wanted is None else part.rstrip("*") in wanted):
            hosts.add(host)
    return sorted(hosts) or None


def partition_nodes(partition: str | None) -> list[str] | None:
    """The node names of the partition (None: the default one), per ``sinfo``; None if unknown.
    Several nodes may share a hostname (several slurmd on one host), so this is not
    :func:`partition_hosts`."""
    argv = ["sinfo", "--noheader", "--Node", "--format=%N|%P"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    wanted = {name.strip() for name in partition.split(",")} if partition else None
    names = set()
    for line in out.splitlines():
        name, _, part = line.strip().partition("|")
        if name and (part.endswith("*") if wanted is None else part.rstrip("*") in wanted):
            names.add(name)
    return sorted(names) or None


def is_this_host(host: str) -> bool:
    """Whether a node's hostname names the machine this runs on."""
    mine = {socket.gethostname(), socket.getfqdn(), "localhost"}
    return host in mine or host.split(".")[0] in {name.split(".")[0] for name in mine}


def check_shared(home: Path, partition: str | None) -> str | None:
    """Refuse a home the job's nodes cannot see; returns a warning (or None) when it may be local."""
    if os.environ.get(SHARED_ENV) == "1":
        return None
    hosts = partition_hosts(partition)
    if hosts and all(is_this_host(host) for host in hosts):
        return None  # the job runs on this machine: it sees this machine's files
    return check_home_shared(home, "the Slurm job's nodes", "the job's nodes")


def check_home_shared(home: Path, nodes: str, short: str | None = None, key: str = "LOWRANK_HOME") -> str | None:
    """Refuse a home on a memory or node-local filesystem that other machines (``nodes``, e.g.
    "the Slurm job's nodes") must read and write; a warning (or None) when it may be local.
    The caller has decided that those machines are not this one."""
    if os.environ.get(SHARED_ENV) == "1":
        return None
    home = Path(home).resolve()
    kind = filesystem_type(home)
    where = f"{home} ({kind or 'unknown filesystem'})"
    if kind in LOCAL_ONLY_TYPES or any(str(home) == d or str(home).startswith(d + "/") for d in LOCAL_ONLY_DIRS):
        raise UserError(f"LOWRANK_HOME {where} is local to this machine; {nodes} cannot see it",
                        key=key, hint=f"set LOWRANK_HOME to a directory on a shared filesystem "
                                      f"(your cluster's home or project space), or {SHARED_ENV}=1 if it is shared")
    if kind not in NETWORK_TYPES:
        return (f"warning: LOWRANK_HOME {where} is not on a known network filesystem; {short or nodes} must see "
                f"it (set {SHARED_ENV}=1 to silence this)")
    return None
