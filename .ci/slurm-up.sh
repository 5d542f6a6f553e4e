#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests/test_slurm.py: Debian's slurm-wlm and munge, a munge key,
# a slurm.conf naming this host as controller and only node (no cgroups, no accounting database), then munged,
# slurmctld and slurmd. Needs root and apt-get; does nothing when a cluster already answers `sinfo`.
set -euo pipefail
start=$(date +%s)
if pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null && sinfo -h >/dev/null 2>&1; then
  echo "slurm: already up"; exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq slurm-wlm munge >/dev/null 2>&1 \
    || { apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq slurm-wlm munge >/dev/null; }
fi
echo "slurm: installed in $(( $(date +%s) - start )) s"
host=$(hostname)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # MiB, leaving 1 GiB to the system
mkdir -p /etc/munge /var/log/munge /var/lib/munge /run/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /etc/slurm
chown -R munge:munge /etc/munge /var/log/munge /var/lib/munge /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=kd-ci
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmUser=root
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
KillWait=30
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 30); do
  if sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mixed|alloc'; then
    echo "slurm: up in $(( $(date +%s) - start )) s ($cpus CPUs, $memory MiB on $host)"; exit 0
  fi
  sleep 1
done
echo "slurm: the node did not come up; see /var/log/slurm/" >&2
sinfo >&2 || true
exit 1
