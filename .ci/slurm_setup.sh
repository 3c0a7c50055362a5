#!/usr/bin/env bash
# Start a real single-node Slurm cluster on this machine (Debian, as root), idempotently:
# installs slurm-wlm + munge + slurmdbd + mariadb-server when missing, writes a munge key,
# /etc/slurm/slurmdbd.conf and /etc/slurm/slurm.conf (this node's real CPUs and memory, one
# partition `debug`, accounting through slurmdbd on a local MariaDB so `sacct` and
# submitit's job watcher see every job), starts mariadbd, munged, slurmdbd, slurmctld and
# slurmd unless they run, and waits until `sbatch` can place a job. Safe to run again.
#
#   sudo .ci/slurm_setup.sh          # then: sinfo; sbatch --wrap hostname; squeue; sacct
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "slurm_setup: must run as root (it installs packages and starts system daemons)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends slurm-wlm slurm-client munge slurmdbd mariadb-server
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
  pkill -x slurmdbd 2>/dev/null || true
  sleep 1
fi
chmod 0600 /etc/slurm/slurmdbd.conf

# -- slurm.conf: this node as it really is (slurmd -C prints its CPUs, sockets, memory)
NODE=$(hostname -s)
HW=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ UpTime=.*//')
MEM=$(echo "$HW" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
MEM=$(( MEM * 9 / 10 ))  # leave the OS some room: a node that reports less than it claims is drained
HW=$(echo "$HW" | sed "s/RealMemory=[0-9]*/RealMemory=$MEM/")
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
CONF=$(cat <<EOF
# written by .ci/slurm_setup.sh: a single-node test cluster
ClusterName=lowrank-ci
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
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
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)
if [ ! -f /etc/slurm/slurm.conf ] || [ "$(cat /etc/slurm/slurm.conf)" != "$CONF" ]; then
  echo "$CONF" > /etc/slurm/slurm.conf
  CHANGED=1
else
  CHANGED=0
fi
touch /etc/slurm/cgroup.conf

if [ "$CHANGED" = 1 ]; then  # a running daemon with an old config: restart it
  pkill -x slurmctld 2>/dev/null || true
  pkill -x slurmd 2>/dev/null || true
  for _ in $(seq 30); do  # slurmctld saves its state on the way out: wait until both are gone
    pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break
    sleep 1
  done
fi
pgrep -x slurmdbd >/dev/null || /usr/sbin/slurmdbd  # before slurmctld: the cluster must be registered
for _ in $(seq 30); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx lowrank-ci; then
  sacctmgr -i add cluster lowrank-ci >/dev/null
fi
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd

# -- ready: the node is idle (resume it if an earlier run left it down/drained)
for _ in $(seq 60); do
  STATE=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$STATE" in
    idle*|mixed*|allocated*) echo "slurm_setup: node $NODE $STATE ($HW)"; exit 0 ;;
    down*|drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "slurm_setup: node $NODE did not become idle: $(sinfo -h -N -o '%N %T %E' 2>&1); see /var/log/slurm/" >&2
exit 1
