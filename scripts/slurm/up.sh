#!/usr/bin/env bash
# Bring up a one-node Slurm on this machine, from Debian's packages, for the `slurm` tests (tests/slurm) and for
# trying workflow/profiles/slurm by hand. Root only. Idempotent: a second call finds the daemons up and only checks.
#
#   scripts/slurm/up.sh          # install (once), configure, start munge, mariadb, slurmdbd, slurmctld, slurmd
#   scripts/slurm/down.sh        # stop what this script started
#
# Why each piece (../shared/docs/ENGINES.md "A one-node Slurm"):
# - accounting (slurmdbd + mariadb): the executor plugin reads job states with `sacct` and checks the account with
#   `sacctmgr`, so a cluster without it cannot run the profile;
# - no init system in this container (policy-rc.d blocks service starts): every daemon is started by hand, detached;
# - no cgroups: proctrack/linuxproc and task/none;
# - one node, two partitions `cpu` (default) and `gpu`, and one fake GPU (gres.conf File=/dev/null) so that rules
#   asking for a GPU are scheduled as on a real cluster (their devices are `cpu` in the tiny test profiles).
#
# Environment: SSMTTM_SLURM_ACCOUNT (default ssmttm_test): the account created and given to root;
# SSMTTM_SLURM_WAIT_S (default 60): how long to wait for each daemon.
set -euo pipefail

ACCOUNT="${SSMTTM_SLURM_ACCOUNT:-ssmttm_test}"
CLUSTER="ssmttm"
WAIT_S="${SSMTTM_SLURM_WAIT_S:-60}"
STATE_DIR=/run/ssmttm-slurm              # what this script started (down.sh stops exactly those)
MARKER="# written by ssmttm scripts/slurm/up.sh"
DB_PASS_FILE=/etc/slurm/.ssmttm-db-pass
HOST="$(hostname -s)"

die() { echo "slurm up: $*" >&2; exit 1; }
say() { echo "slurm up: $*"; }

[[ "$(id -u)" == 0 ]] || die "run as root (it installs packages, writes /etc/slurm and starts daemons)"

# ------------------------------------------------------------------------------------------------------ packages
PACKAGES=(slurm-wlm slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -q >/dev/null || die "apt-get update failed (are Debian's package mirrors reachable?)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null \
        || die "apt-get install ${PACKAGES[*]} failed"
fi

# --------------------------------------------------------------------------------------------------- folders
install -d -o munge -g munge -m 0755 /run/munge
install -d -o slurm -g slurm -m 0755 /run/slurm /var/lib/slurm /var/lib/slurm/slurmctld /var/log/slurm
install -d -o root -g root -m 0755 /var/lib/slurm/slurmd
install -d -o mysql -g mysql -m 0755 /run/mysqld
install -d -m 0755 "$STATE_DIR"
[[ -s /etc/munge/munge.key ]] || { /usr/sbin/mungekey --create --keyfile /etc/munge/munge.key \
    && chown munge:munge /etc/munge/munge.key && chmod 0600 /etc/munge/munge.key; } || die "cannot create a munge key"

# ----------------------------------------------------------------------------------------------------- config
# Only our own files are (re)written: a slurm.conf written by someone else means a real cluster, left alone.
write_config() {  # path mode owner; content on stdin
    local path="$1" mode="$2" owner="$3"
    if [[ -e "$path" ]] && ! grep -qF "$MARKER" "$path"; then
        die "$path exists and was not written by this script: is this machine part of a real cluster? Not touching it"
    fi
    local tmp="$path.tmp.$$"
    cat >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    mv -f "$tmp" "$path"
}

# The node's real size, as slurmd measures it (a larger CPUs= or RealMemory= than measured drains the node).
NODE_LINE="$(/usr/sbin/slurmd -C | head -n 1)"
[[ "$NODE_LINE" == NodeName=* ]] || die "slurmd -C did not describe this node: $NODE_LINE"

write_config /etc/slurm/slurm.conf 0644 root:root <<EOF
$MARKER: a one-node test cluster
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# no cgroups in a container
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
# a finished job stays visible to squeue for 5 minutes (the executor's squeue status needs >= 3x its poll interval)
MinJobAge=300
KillWait=30
ReturnToService=2
SlurmdTimeout=300
$NODE_LINE Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF

write_config /etc/slurm/gres.conf 0644 root:root <<EOF
$MARKER
AutoDetect=off
NodeName=$HOST Name=gpu File=/dev/null
EOF

[[ -s "$DB_PASS_FILE" ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DB_PASS_FILE")
DB_PASS="$(cat "$DB_PASS_FILE")"
write_config /etc/slurm/slurmdbd.conf 0600 slurm:slurm <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
EOF

# ---------------------------------------------------------------------------------------------------- daemons
alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # description, command...: poll every second for WAIT_S seconds
    local what="$1"; shift
    local deadline=$((SECONDS + WAIT_S))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what did not come up within ${WAIT_S}s (logs: /var/log/slurm/, /var/log/mysql/)"
        sleep 1
    done
}

start() {  # name pidfile command...: start detached unless its pid file names a live process
    local name="$1" pidfile="$2"; shift 2
    if alive "$pidfile"; then
        say "$name already running (pid $(cat "$pidfile"))"
        return
    fi
    say "starting $name"
    setsid "$@" </dev/null >>"/var/log/slurm/$name.out" 2>&1 &
    echo "$name $pidfile" >>"$STATE_DIR/started"
}

start munged /run/munge/munged.pid runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
wait_for "munged" bash -c 'munge -n | unmunge'

start mariadbd /run/mysqld/mysqld.pid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
    --socket=/run/mysqld/mysqld.sock --skip-networking=0 --bind-address=127.0.0.1
wait_for "mariadbd" mysqladmin --socket=/run/mysqld/mysqld.sock ping
mysql --socket=/run/mysqld/mysqld.sock <<EOF || die "cannot create the slurm database user"
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF

start slurmdbd /run/slurm/slurmdbd.pid /usr/sbin/slurmdbd -D
wait_for "slurmdbd" sacctmgr -n list cluster
# the cluster must exist in the database before slurmctld registers with it
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null

start slurmctld /run/slurm/slurmctld.pid /usr/sbin/slurmctld -D
wait_for "slurmctld" scontrol ping
start slurmd /run/slurm/slurmd.pid /usr/sbin/slurmd -D
node_idle() { sinfo -h -N -n "$HOST" -o %T | grep -Eq '^(idle|mixed|allocated)'; }
for _ in 1 2 3 4 5; do node_idle && break; sleep 1; done
# a node left down or drained by an earlier session (e.g. a slurmd killed by down.sh) is put back in service
if sinfo -h -N -n "$HOST" -o %T | grep -Eq 'down|drain'; then
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
fi
wait_for "node $HOST (sinfo state idle)" node_idle

# ------------------------------------------------------------------------------------------------- accounting
sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" \
    || sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="ssmttm tests" >/dev/null
sacctmgr -n -P list association user=root account="$ACCOUNT" format=user | grep -qx root \
    || sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
wait_for "the association root/$ACCOUNT" bash -c \
    "sacctmgr -n -P list association user=root account=$ACCOUNT format=user | grep -qx root"

say "up: node $(sinfo -h -N -n "$HOST" -o "%N %c CPUs %m MB %G" | head -n 1), partitions $(sinfo -h -o %P | tr '\n' ' ')account $ACCOUNT"
