#!/usr/bin/env bash
# A Docker engine for `just images` and the `containers` test marker, and nothing else.
#
#   scripts/docker.sh up      install Debian's docker.io when dockerd is missing (root), and start
#                             dockerd when no engine answers; prints "started" or "running"
#   scripts/docker.sh down    stop the dockerd this script started (nothing else)
#   scripts/docker.sh status
#
# The engine runs without the docker0 bridge and without touching iptables: every UDB container
# runs with host networking, so every port is on 127.0.0.1 and no traffic goes to the bridge's
# private range. A dockerd started here records its pid in .cache/run/dockerd.pid; `down` stops
# only that process (an engine that was already running, e.g. a system service, is left alone).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run_dir="$root/.cache/run"
pid_file="$run_dir/dockerd.pid"
log_file="$root/.cache/logs/dockerd.log"

engine_up() { docker info >/dev/null 2>&1; }

ours() {
    [ -f "$pid_file" ] || return 1
    local pid
    pid="$(cat "$pid_file")"
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q '^dockerd '
}

install_docker() {
    if command -v dockerd >/dev/null 2>&1; then return 0; fi
    if [ "$(id -u)" != 0 ]; then
        echo "docker.sh: dockerd is not installed and installing it needs root: apt-get install -y docker.io" >&2
        exit 1
    fi
    echo "docker.sh: installing Debian's docker.io" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
}

case "${1:-status}" in
up)
    if engine_up; then echo running; exit 0; fi
    install_docker
    mkdir -p "$run_dir" "$(dirname "$log_file")"
    # --bridge=none: no docker0 and no private addresses; --iptables=false: the host's rules stay as they are.
    setsid dockerd --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
        --storage-driver=overlay2 --exec-opt native.cgroupdriver=cgroupfs \
        --host=unix:///var/run/docker.sock >>"$log_file" 2>&1 </dev/null &
    echo $! >"$pid_file"
    for _ in $(seq 1 120); do
        if engine_up; then echo started; exit 0; fi
        if ! ours; then break; fi
        sleep 0.5
    done
    echo "docker.sh: dockerd did not come up; last lines of $log_file:" >&2
    tail -n 20 "$log_file" >&2
    exit 1
    ;;
down)
    if ! ours; then rm -f "$pid_file"; exit 0; fi
    pid="$(cat "$pid_file")"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
        [ -d "/proc/$pid" ] || break
        sleep 0.5
    done
    rm -f "$pid_file"
    echo stopped
    ;;
status)
    if engine_up; then
        if ours; then echo "up (started by scripts/docker.sh, pid $(cat "$pid_file"))"; else echo up; fi
    else
        echo down
    fi
    ;;
*)
    echo "usage: scripts/docker.sh up|down|status" >&2
    exit 2
    ;;
esac
