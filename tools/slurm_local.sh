#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (slurmctld, slurmd and munge on localhost), to run
# the job arrays in examples/cluster/ for real. Needs root and Debian's slurm-wlm and munge
# (apt-get install slurm-wlm munge). Not part of CI.
#
#   tools/slurm_local.sh start     # configure and start the daemons
#   tools/slurm_local.sh stop
set -euo pipefail
cmd=${1:-start}
conf=/etc/slurm/slurm.conf
if [ "$cmd" = stop ]; then
    pkill -x slurmd || true; pkill -x slurmctld || true; pkill -x munged || true
    exit 0
fi
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat >"$conf" <<CONF
ClusterName=noisear-local
SlurmctldHost=localhost
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmUser=root
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
[ -s /etc/munge/munge.key ] || mungekey --create
chown munge:munge /etc/munge/munge.key /run/munge 2>/dev/null || true
pgrep -x munged >/dev/null || runuser -u munge -- munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 30); do
    if sinfo -h -o %T 2>/dev/null | grep -q idle; then sinfo; exit 0; fi
    sleep 1
done
echo "slurm_local: the node did not become idle; see /var/log/slurm/" >&2
sinfo || true
exit 1
