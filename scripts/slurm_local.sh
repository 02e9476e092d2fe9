#!/usr/bin/env bash
# A one-node SLURM cluster on this machine: for the SLURM tests and for
# trying the cluster commands of the docs without a cluster.
#
#   scripts/slurm_local.sh start    install slurm-wlm and munge where missing
#                                   (apt-get, as root), then start munged,
#                                   slurmctld and slurmd: one node (this host,
#                                   its cores) in one partition, 'local'
#   scripts/slurm_local.sh stop     stop the daemons this script started
#   scripts/slurm_local.sh status   say whether the cluster answers
#
# The daemons run as root with ProctrackType=proctrack/linuxproc and
# TaskPlugin=task/none (no cgroups, so it works in a container), no
# accounting. Their state and logs go to $SLURM_LOCAL_DIR
# (default /tmp/slurm_local). The config is written to /etc/slurm/slurm.conf,
# where sbatch and srun look for it; a slurm.conf this script did not write
# is left alone and `start` refuses. `start` prints one line and exits 1
# where the cluster cannot start (not root, no apt-get, no package).
set -uo pipefail

STATE=${SLURM_LOCAL_DIR:-/tmp/slurm_local}
CONF=/etc/slurm/slurm.conf
MARK='# Written by scripts/slurm_local.sh (a one-node local cluster).'
NODE=$(hostname -s)

fail() {
  echo "slurm_local.sh: $*" >&2
  exit 1
}

answers() {
  timeout 20 sinfo -h -o %T >/dev/null 2>&1
}

alive() {  # alive FILE: whether the daemon whose id FILE holds runs.
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v munged >/dev/null && return 0
  [ "$(id -u)" = 0 ] || fail 'slurm-wlm or munge is missing and this is not root: install them (apt-get install slurm-wlm munge) or run as root.'
  command -v apt-get >/dev/null || fail 'slurm-wlm or munge is missing and there is no apt-get: install SLURM and munge by hand.'
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq slurm-wlm munge; } >"$STATE/apt.log" 2>&1 \
    || fail "apt-get install slurm-wlm munge failed: see $STATE/apt.log."
}

write_conf() {
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    fail "$CONF exists and was not written by this script: a real cluster's config is left alone."
  fi
  mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
  cat >"$CONF" <<EOF
$MARK
ClusterName=local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MaxArraySize=10001
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=$NODE CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0  # Already running (ours or the system's).
  fi
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -f /etc/munge/munge.key ] || runuser -u munge -- mungekey \
    || fail 'cannot create /etc/munge/munge.key (mungekey failed).'
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid \
    || fail 'munged did not start: see /var/log/munge/munged.log.'
  cp /run/munge/munged.pid "$STATE/munged.pid"  # Ours to stop.
}

start() {
  mkdir -p "$STATE" || fail "cannot create $STATE."
  if answers; then
    echo "slurm_local.sh: a cluster answers already ($(sinfo -h -o '%P %D node(s) %C cpus(A/I/O/T)' | head -1))."
    return 0
  fi
  if alive "$STATE/slurmctld.pid" || alive "$STATE/slurmd.pid"; then
    # Ours, running but slow to answer (a loaded machine): a second pair of
    # daemons would fight the first over its jobs.
    for _ in $(seq 30); do answers && { echo 'slurm_local.sh: the cluster this script started answers.'; return 0; }; sleep 2; done
    fail "the daemons this script started run but do not answer: see $STATE/slurmctld.log, or stop them first."
  fi
  [ "$(id -u)" = 0 ] || fail 'the daemons run as root here: run start as root.'
  install
  write_conf
  start_munge
  slurmctld || fail "slurmctld did not start: see $STATE/slurmctld.log."
  slurmd || fail "slurmd did not start: see $STATE/slurmd.log."
  for _ in $(seq 60); do
    state=$(timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1)
    case "$state" in
      idle|mixed|allocated)
        echo "slurm_local.sh: started: partition local, node $NODE, $(nproc) CPUs."
        return 0 ;;
      down*|drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null ;;
    esac
    sleep 0.5
  done
  fail "the node did not come up within 30 s (state '${state:-none}'): see $STATE/slurmctld.log and $STATE/slurmd.log."
}

stop_pid() {  # stop_pid FILE NAME: ends the daemon whose id FILE holds.
  local pid
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  rm -f "$1"
}

stop() {
  stop_pid "$STATE/slurmd.pid" slurmd
  stop_pid "$STATE/slurmctld.pid" slurmctld
  stop_pid "$STATE/munged.pid" munged
  echo 'slurm_local.sh: stopped.'
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if answers; then sinfo; else echo 'slurm_local.sh: no cluster answers.'; exit 1; fi ;;
  *) echo 'usage: scripts/slurm_local.sh start|stop|status' >&2; exit 2 ;;
esac
