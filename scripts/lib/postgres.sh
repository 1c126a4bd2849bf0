# shellcheck shell=bash
# Private PostgreSQL cluster for the yujing test environment.
#
# Source this file; it defines functions only and changes no shell option,
# trap or variable of the caller except those documented below.
#
#   yj_pg_start DIR   start a throw-away cluster under DIR (or, when
#                     DATABASE_URL is already set, only check that it answers)
#   yj_pg_stop [DIR]  stop it (no-op for an external DATABASE_URL)
#
# Exports after yj_pg_start:
#   DATABASE_URL=postgres://yujing@127.0.0.1:PORT/yujing_test
#       role "yujing" is the bootstrap superuser (so CREATE DATABASE works);
#       trust authentication, TCP on 127.0.0.1 only.
#   YUJING_TEST_PG_PORT, YUJING_TEST_PG_DIR   (own cluster only)
#
# Knobs (environment):
#   YUJING_PG_START_TIMEOUT  seconds pg_ctl waits for the server (60)
#   YUJING_PG_RUN_AS         user that runs the server when we are root
#                            (default: nobody)
#   YUJING_PG_EXTRA_CONF     lines appended to the cluster's postgresql.conf
#                            (e.g. "track_commit_timestamp = on")

_YJ_PG_USER=yujing
_YJ_PG_DB=yujing_test

_yj_pg_err() { printf 'yj_pg: error: %s\n' "$*" >&2; }
_yj_pg_log() { printf 'yj_pg: %s\n' "$*" >&2; }

# shellcheck source=scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

# Install Debian packages (root, or sudo -n when available).
_yj_pg_apt_install() {
    _yj_pg_log "(installing PostgreSQL may also start Debian's own cluster on port 5432; we do not use it)"
    yj_apt_install yj_pg "$@"
}

# Print the directory holding initdb, pg_ctl, postgres and psql of one
# PostgreSQL version: PATH first (symlinks resolved), then the newest
# /usr/lib/postgresql/*/bin.
_yj_pg_find_bindir() {
    local p d
    if p=$(command -v pg_ctl 2>/dev/null) && command -v initdb >/dev/null 2>&1; then
        d=$(dirname "$(readlink -f "$p")")
        if [[ -x $d/initdb && -x $d/postgres ]]; then
            printf '%s\n' "$d"
            return 0
        fi
    fi
    while IFS= read -r d; do
        if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then
            printf '%s\n' "$d"
            return 0
        fi
    done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V -r)
    return 1
}

# Print the path of a psql client.
_yj_pg_find_psql() {
    local d
    if d=$(_yj_pg_find_bindir) && [[ -x $d/psql ]]; then
        printf '%s\n' "$d/psql"
    elif command -v psql >/dev/null 2>&1; then
        command -v psql
    else
        return 1
    fi
}

# Print a free TCP port on 127.0.0.1.
_yj_pg_free_port() {
    local port i
    if command -v python3 >/dev/null 2>&1 &&
        port=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' 2>/dev/null) && [[ $port =~ ^[0-9]+$ ]]; then
        printf '%s\n' "$port"
        return 0
    fi
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    _yj_pg_err "could not find a free port"
    return 1
}

# PostgreSQL refuses to run as root.  As root, run the server tools as an
# unprivileged user (nobody).  setpriv keeps CAP_DAC_READ_SEARCH as an ambient
# capability so that the user can reach DIR even when a parent directory of
# the checkout is not world-searchable (e.g. /root/...); plain runuser is the
# fallback.  Sets _YJ_PG_AS (command prefix array) and _YJ_PG_OWNER.
_yj_pg_setup_runas() {
    local user=${YUJING_PG_RUN_AS:-nobody} uid gid
    _YJ_PG_AS=()
    _YJ_PG_OWNER=""
    [[ $(id -u) -eq 0 ]] || return 0
    if ! uid=$(id -u "$user" 2>/dev/null) || ! gid=$(id -g "$user" 2>/dev/null); then
        _yj_pg_err "running as root and user '$user' does not exist (set YUJING_PG_RUN_AS)"
        return 1
    fi
    _YJ_PG_OWNER="$uid:$gid"
    if command -v setpriv >/dev/null 2>&1 &&
        setpriv --reuid="$uid" --regid="$gid" --clear-groups \
            --inh-caps=+dac_read_search --ambient-caps=+dac_read_search -- true 2>/dev/null; then
        _YJ_PG_AS=(setpriv --reuid="$uid" --regid="$gid" --clear-groups
            --inh-caps=+dac_read_search --ambient-caps=+dac_read_search --)
    elif command -v runuser >/dev/null 2>&1; then
        _YJ_PG_AS=(runuser -u "$user" --)
    else
        _yj_pg_err "running as root but neither setpriv nor runuser is available"
        return 1
    fi
}

# Kill every process whose working directory is DATA (a postmaster and its
# backends chdir into the data directory; this also finds backends orphaned by
# a SIGKILLed postmaster).  SIG first, KILL after ~5 s.
_yj_pg_kill_cluster_procs() {
    local data=$1 sig=${2:-QUIT} p pid i found
    local -a pids=()
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/cwd" 2>/dev/null) == "$data" ]] && pids+=("${p#/proc/}")
    done
    [[ ${#pids[@]} -gt 0 ]] || return 0
    _yj_pg_log "stopping leftover PostgreSQL processes of $data: ${pids[*]}"
    kill "-$sig" "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        found=0
        for pid in "${pids[@]}"; do
            [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$data" ]] && found=1
        done
        [[ $found -eq 1 ]] || return 0
        sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.2
}

# yj_pg_start DIR
yj_pg_start() {
    local dir=${1:-} bindir psql data sock port rc i t0
    if [[ -n ${DATABASE_URL:-} && ${DATABASE_URL} != "${_YJ_PG_OWN_URL:-}" ]]; then
        psql=$(_yj_pg_find_psql) || {
            _yj_pg_apt_install postgresql-client || return 1
            psql=$(_yj_pg_find_psql) || {
                _yj_pg_err "psql not found"
                return 1
            }
        }
        if PGCONNECT_TIMEOUT=10 "$psql" "$DATABASE_URL" -XAtqc 'select 1' >/dev/null; then
            _yj_pg_log "using existing DATABASE_URL (answers select 1)"
            return 0
        fi
        _yj_pg_err "DATABASE_URL is set but does not answer: psql \"\$DATABASE_URL\" -c 'select 1' failed"
        return 1
    fi
    if [[ -z $dir ]]; then
        _yj_pg_err "usage: yj_pg_start DIR"
        return 2
    fi
    if ! bindir=$(_yj_pg_find_bindir); then
        _yj_pg_apt_install postgresql || return 1
        bindir=$(_yj_pg_find_bindir) || {
            _yj_pg_err "initdb/pg_ctl still not found after installing postgresql"
            return 1
        }
    fi
    psql=$bindir/psql
    [[ -x $psql ]] || psql=$(command -v psql) || {
        _yj_pg_err "psql not found next to $bindir/pg_ctl nor on PATH"
        return 1
    }
    _yj_pg_setup_runas || return 1
    mkdir -p "$dir" && dir=$(cd "$dir" && pwd) || return 1
    data=$dir/data
    t0=${EPOCHREALTIME:-0}

    # A cluster left by an earlier run: stop whatever still runs on it, then
    # start from scratch (initdb is ~1 s and leaves no stale test databases).
    # (Processes are found by working directory, never by the possibly stale
    # pid in postmaster.pid.)
    _yj_pg_kill_cluster_procs "$data" QUIT
    rm -rf "$data" "$dir/sock" || return 1
    mkdir -p "$data" || return 1
    chmod 0700 "$data"
    : >"$dir/postgres.log"
    # Unix socket inside DIR when the path fits (sun_path is 108 bytes).
    sock=$dir/sock
    if [[ $((${#sock} + 20)) -lt 100 ]]; then
        mkdir -p "$sock"
    else
        sock=""
    fi
    if [[ -n $_YJ_PG_OWNER ]]; then
        chown "$_YJ_PG_OWNER" "$data" "$dir/postgres.log" ${sock:+"$sock"} || return 1
    fi

    if ! (cd "$data" && "${_YJ_PG_AS[@]}" "$bindir/initdb" -D "$data" -U "$_YJ_PG_USER" \
        -A trust -E UTF8 --locale=C -N >"$dir/initdb.log" 2>&1); then
        _yj_pg_err "initdb failed; last lines of $dir/initdb.log:"
        tail -n 20 "$dir/initdb.log" >&2 || true
        return 1
    fi
    cat >"$data/pg_hba.conf" <<'EOF'
# yujing test cluster: trust, loopback only
local   all   all                  trust
host    all   all   127.0.0.1/32   trust
host    all   all   ::1/128        trust
EOF
    cat >>"$data/postgresql.conf" <<EOF

# ---- yujing test cluster ----
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
log_min_messages = warning
${YUJING_PG_EXTRA_CONF:-}
EOF
    [[ -z $_YJ_PG_OWNER ]] || chown "$_YJ_PG_OWNER" "$data/pg_hba.conf" "$data/postgresql.conf"

    for ((i = 0; i < 3; i++)); do
        port=$(_yj_pg_free_port) || return 1
        rc=0
        (cd "$data" && "${_YJ_PG_AS[@]}" "$bindir/pg_ctl" -D "$data" -l "$dir/postgres.log" \
            -o "-p $port" -w -t "${YUJING_PG_START_TIMEOUT:-60}" start >"$dir/pg_ctl.log" 2>&1) || rc=$?
        [[ $rc -eq 0 ]] && break
        grep -q 'could not bind\|Address already in use' "$dir/postgres.log" 2>/dev/null || break
        _yj_pg_log "port $port was taken, retrying"
        _yj_pg_kill_cluster_procs "$data" QUIT
    done
    if [[ $rc -ne 0 ]]; then
        _yj_pg_err "PostgreSQL did not start; last lines of $dir/postgres.log and pg_ctl output:"
        tail -n 20 "$dir/postgres.log" "$dir/pg_ctl.log" >&2 || true
        _yj_pg_kill_cluster_procs "$data" QUIT
        return 1
    fi
    if ! PGCONNECT_TIMEOUT=10 "$psql" -X -h 127.0.0.1 -p "$port" -U "$_YJ_PG_USER" -d postgres \
        -Atqc "CREATE DATABASE $_YJ_PG_DB" >"$dir/psql.log" 2>&1; then
        _yj_pg_err "CREATE DATABASE $_YJ_PG_DB failed: $(cat "$dir/psql.log")"
        yj_pg_stop "$dir" || true
        return 1
    fi
    _YJ_PG_DIR=$dir
    _YJ_PG_BINDIR=$bindir
    _YJ_PG_OWN_URL="postgres://$_YJ_PG_USER@127.0.0.1:$port/$_YJ_PG_DB"
    export DATABASE_URL=$_YJ_PG_OWN_URL
    export YUJING_TEST_PG_PORT=$port YUJING_TEST_PG_DIR=$dir
    _yj_pg_log "PostgreSQL $("$bindir/postgres" -V | awk '{print $3}') ready: $DATABASE_URL ($(_yj_pg_ms_since "$t0") ms incl. initdb)"
}

# Milliseconds elapsed since T0 (a $EPOCHREALTIME value).
_yj_pg_ms_since() {
    local t0=${1:-0} now=${EPOCHREALTIME:-0}
    t0=${t0//[.,]/}
    now=${now//[.,]/}
    printf '%s\n' "$(((10#$now - 10#$t0) / 1000))"
}

# yj_pg_stop [DIR]: stop our cluster (fast shutdown; processes killed if
# needed).  Leaves an external DATABASE_URL alone.
yj_pg_stop() {
    local dir=${1:-${_YJ_PG_DIR:-}} bindir data pid
    [[ -n $dir && -d $dir/data ]] || return 0
    dir=$(cd "$dir" && pwd) || return 0
    data=$dir/data
    bindir=${_YJ_PG_BINDIR:-}
    [[ -n $bindir ]] || bindir=$(_yj_pg_find_bindir) || bindir=""
    _yj_pg_setup_runas || true
    # pg_ctl signals the pid in postmaster.pid: only use it when that pid
    # really is a postmaster of this data directory (not a stale file).
    pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
    if [[ -n $bindir && $pid =~ ^[0-9]+$ && $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$data" ]]; then
        "${_YJ_PG_AS[@]}" "$bindir/pg_ctl" -D "$data" -m fast -w -t 20 stop >/dev/null 2>&1 || true
    fi
    _yj_pg_kill_cluster_procs "$data" QUIT
    if [[ $dir == "${_YJ_PG_DIR:-}" ]]; then
        if [[ ${DATABASE_URL:-} == "${_YJ_PG_OWN_URL:-}" ]]; then
            unset DATABASE_URL
        fi
        unset _YJ_PG_DIR _YJ_PG_BINDIR _YJ_PG_OWN_URL YUJING_TEST_PG_PORT YUJING_TEST_PG_DIR
    fi
    return 0
}
