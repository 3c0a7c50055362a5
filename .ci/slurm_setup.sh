#!/usr/bin/env bash
# Start a real Slurm test cluster on this machine (Debian, as root), idempotently:
# installs slurm-wlm + munge + slurmdbd + mariadb-server when missing, writes a munge key,
# /etc/slurm/slurmdbd.conf and /etc/slurm/slurm.conf, starts mariadbd, munged, slurmdbd,
# slurmctld and the slurmd daemons unless they run, and waits until every node is idle.
#
# Two partitions, both on this one machine:
#   debug (default)  this node as it really is (its CPUs and memory), one slurmd
#   multi            two nodes, nodeA and nodeB: two more slurmd on this host (Debian's build
#                    has MULTIPLE_SLURMD: `slurmd -N nodeA`, each node with its own port, spool
#                    directory, pid file and log), for jobs with ranks on two nodes
# Accounting goes through slurmdbd on a local MariaDB, so `sacct` and submitit's job watcher
# see every job. Safe to run again.
#
#   sudo .ci/slurm_setup.sh          # then: sinfo; sbatch --wrap hostname; squeue; sacct
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "slurm_setup: must run as root (it installs packages and starts system daemons)" >&2
  exit 1
fi

# a daemon is found (and stopped) through its pid file, not by its name: three slurmd run here
running() {  # running PIDFILE NAME: the pid file names a live process called NAME
  [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]
}
stop() {  # stop PIDFILE NAME: SIGTERM, then wait until it is gone (slurmctld saves its state on the way out)
  if running "$1" "$2"; then
    kill "$(cat "$1")" 2>/dev/null || true
    for _ in $(seq 30); do running "$1" "$2" || break; sleep 1; done
  fi
}

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends slurm-wlm slurm-client munge slurmdbd mariadb-server
fi

# -- /dev/null for the daemons: munged (user munge) daemonises onto /dev/null and exits with
#    'Failed to open "/dev/null": Permission denied' where it lost its 0666 mode (seen on a CI
#    machine, crw-r--r--); a character device 1,3 of any other mode is put back to 0666
if [ -c /dev/null ] && [ "$(stat -c %a /dev/null)" != 666 ]; then
  chmod 0666 /dev/null
fi

# -- munge: the cluster's authentication (one key, shared by every daemon of the cluster)
mkdir -p /etc/munge /var/log/munge /var/lib/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /var/log/munge /var/lib/munge /run/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
fi

# -- accounting: slurmdbd on a local MariaDB (about 15 s to install; sacct needs it)
mkdir -p /run/mysqld /var/log/slurm /etc/slurm
chown mysql:mysql /run/mysqld
if ! pgrep -x mariadbd >/dev/null; then
  /etc/init.d/mariadb start >/dev/null
fi
for _ in $(seq 30); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 1; done
mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
DBD_CONF=$(cat <<EOF
# written by .ci/slurm_setup.sh: accounting of the single-node test cluster
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
)
if [ ! -f /etc/slurm/slurmdbd.conf ] || [ "$(cat /etc/slurm/slurmdbd.conf)" != "$DBD_CONF" ]; then
  echo "$DBD_CONF" > /etc/slurm/slurmdbd.conf
  stop /run/slurmdbd.pid slurmdbd
fi
chmod 0600 /etc/slurm/slurmdbd.conf

# -- slurm.conf: this node as it really is (slurmd -C prints its CPUs, sockets, memory), and the
#    two nodes of partition `multi` on the same host, each with its own slurmd (multiple-slurmd mode)
NODE=$(hostname -s)
MULTI="nodeA:6821 nodeB:6822"  # node name:slurmd port (this node's slurmd keeps the default, 6818)
HW=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ UpTime=.*//')
MEM=$(echo "$HW" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
MEM=$(( MEM * 9 / 10 ))  # leave the OS some room: a node that reports less than it claims is drained
HW=$(echo "$HW" | sed "s/RealMemory=[0-9]*/RealMemory=$MEM/")
MULTI_LINES=""
MULTI_NAMES=""
for entry in $MULTI; do
  name=${entry%%:*}
  port=${entry##*:}
  # each is this host: its CPUs and memory, NodeHostname this host (so the shared-filesystem check
  # knows both nodes are this machine), NodeAddr the loopback, a port of its own
  MULTI_LINES="${MULTI_LINES}NodeName=$name NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$port $HW State=UNKNOWN
"
  MULTI_NAMES="${MULTI_NAMES:+$MULTI_NAMES,}$name"
  mkdir -p "/var/spool/slurmd/$name"
done
mkdir -p /etc/slurm /var/spool/slurmctld "/var/spool/slurmd/$NODE" /var/log/slurm
CONF=$(cat <<EOF
# written by .ci/slurm_setup.sh: a test cluster on one machine (partition debug: this node;
# partition multi: nodes $MULTI_NAMES, two more slurmd on this host)
ClusterName=lowrank-ci
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=3600
KillWait=5
OverTimeLimit=0
InactiveLimit=0
SchedulerParameters=sched_interval=2,bf_interval=2
# cred_expire: a requeued job may start again after 10 s (Slurm's default: 120 s)
MpiDefault=none
NodeName=$NODE $HW State=UNKNOWN
${MULTI_LINES}PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=multi Nodes=$MULTI_NAMES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)
if [ ! -f /etc/slurm/slurm.conf ] || [ "$(cat /etc/slurm/slurm.conf)" != "$CONF" ]; then
  echo "$CONF" > /etc/slurm/slurm.conf
  CHANGED=1
else
  CHANGED=0
fi
touch /etc/slurm/cgroup.conf

SLURMDS="$NODE ${MULTI_NAMES//,/ }"
if [ "$CHANGED" = 1 ]; then  # a running daemon with an old config: restart it
  stop /run/slurmctld.pid slurmctld
  stop /run/slurmd.pid slurmd  # the one slurmd of the one-node cluster this script started before
  for name in $SLURMDS; do stop "/run/slurmd-$name.pid" slurmd; done
fi
running /run/slurmdbd.pid slurmdbd || /usr/sbin/slurmdbd  # before slurmctld: the cluster must be registered
for _ in $(seq 30); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx lowrank-ci; then
  sacctmgr -i add cluster lowrank-ci >/dev/null
fi
running /run/slurmctld.pid slurmctld || /usr/sbin/slurmctld
for name in $SLURMDS; do  # -N: which node of slurm.conf this slurmd is (all three share this hostname)
  running "/run/slurmd-$name.pid" slurmd || /usr/sbin/slurmd -N "$name"
done

# -- ready: every node is idle (resume one that an earlier run left down or drained)
for _ in $(seq 60); do
  READY=1
  for name in $SLURMDS; do
    STATE=$(sinfo -h -n "$name" -o %T 2>/dev/null || true)
    case "$STATE" in
      idle*|mixed*|allocated*) ;;
      down*|drain*) READY=0; scontrol update NodeName="$name" State=RESUME 2>/dev/null || true ;;
      *) READY=0 ;;
    esac
  done
  if [ "$READY" = 1 ]; then
    echo "slurm_setup: nodes $SLURMDS idle ($HW); partition debug: $NODE, partition multi: $MULTI_NAMES"
    exit 0
  fi
  sleep 1
done
echo "slurm_setup: the nodes did not become idle: $(sinfo -h -N -o '%N %T %E' 2>&1); see /var/log/slurm/" >&2
exit 1
