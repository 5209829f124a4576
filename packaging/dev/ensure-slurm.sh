#!/usr/bin/env bash
# Make sure a single-node Slurm cluster answers on this machine, for the tests
# that run user endpoints whose workers come from Slurm jobs: install Slurm,
# MUNGE and MPICH (its mpiexec takes the -ppn/-hosts that Parsl's mpiexec
# launcher writes) with apt-get if missing, write a small slurm.conf if none
# of ours is there, start munged, slurmctld and slurmd, then wait until the
# node takes jobs. Idempotent: a second run finds everything up and returns.
#
# The cluster (partitions named in templates/examples/slurm and the tests):
#   debug  default, 1 hour limit      long   1 day limit
#   staff  only group root may submit (the tests' "Slurm refuses" case)
# It is a development cluster, never a site's: an /etc/slurm/slurm.conf
# without our marker line is left alone, and then the Slurm tests use
# whatever that cluster offers or skip.
#
# Never fails `make test`: when Slurm cannot be brought up it says why and
# exits 0; the Slurm tests then skip, repeating the reason.
set -uo pipefail
MARKER="# written by compute-agent packaging/dev/ensure-slurm.sh"
CONF=/etc/slurm/slurm.conf
STATUS=/run/compute-agent-slurm.status

give_up() {
    echo "Slurm not available: $1; the Slurm tests will be skipped" | tee "$STATUS" >&2
    exit 0
}

node_takes_jobs() {
    sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    command -v mpiexec.hydra >/dev/null || missing+=(mpich)
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
}

write_conf() {
    [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF" && return 0
    local host cpus
    host=$(hostname -s)
    cpus=$(nproc)
    install -d -m 0755 /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
    cat >"$CONF.new" <<EOF
$MARKER
ClusterName=compute-agent-dev
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=60
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=01:00:00 OverSubscribe=FORCE:16 State=UP
PartitionName=long Nodes=ALL MaxTime=1-00:00:00 OverSubscribe=FORCE:16 State=UP
PartitionName=staff Nodes=ALL AllowGroups=root OverSubscribe=FORCE:16 State=UP
EOF
    if ! cmp -s "$CONF.new" "$CONF"; then
        mv "$CONF.new" "$CONF"
        # A changed configuration reaches running daemons only by a restart.
        pkill -x slurmctld
        pkill -x slurmd
        sleep 1
    else
        rm -f "$CONF.new"
    fi
}

start_munge() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 1 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}

start_slurm() {
    pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
    pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
    for _ in $(seq 1 60); do
        node_takes_jobs && return 0
        # A node left "down" by an earlier unclean stop comes back here.
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1
        sleep 1
    done
    return 1
}

rm -f "$STATUS"
install_packages || give_up "apt-get could not install slurm-wlm, munge and mpich"
write_conf
start_munge || give_up "munged did not start (see /var/log/munge/munged.log)"
start_slurm || give_up "the node did not take jobs within 60 s (see /var/log/slurm/)"
echo "Slurm: $(sinfo -h -o '%P %a %l %D %T' | tr '\n' ';')"
