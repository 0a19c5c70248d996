#!/usr/bin/env bash
# Installs and runs libvirtd with the QEMU driver on a Debian 12 machine WITHOUT systemd (CI
# containers, sandboxes), so that `qemu:///system` works for vwnet's real-hypervisor tests.
# Safe to run again: every step checks before it acts; a running, answering libvirtd is left alone.
#
# Usage:
#   scripts/setup-libvirtd.sh [start]   install what is missing, start virtlogd + libvirtd, wait
#                                       until qemu:///system answers (default action)
#   scripts/setup-libvirtd.sh status    exit 0 iff qemu:///system answers
#   scripts/setup-libvirtd.sh stop      stop libvirtd and virtlogd started by this script; refuses
#                                       while domains are running unless --force (which destroys them)
#
# Environment:
#   VWNET_QEMU_VERSION   Debian version to pin qemu-system-x86 and qemu-utils to (default: the
#                        candidate of qemu-system-x86 from the configured Debian 12 archive)
#   VWNET_LIBVIRTD_WAIT  seconds to wait for the daemon to answer (default 30)
#
# Why each step (measured on Debian 12 sandboxes, see issue #5):
# - qemu-system-x86 and qemu-utils must come from the same Debian version: images that ship a
#   newer qemu-utils from backports conflict with bookworm's qemu-system-x86, hence the pin and
#   --allow-downgrades.
# - the `libvirt-qemu` user and the `kvm`/`libvirt-qemu` groups must exist even though qemu.conf
#   runs QEMU as root (root is what can open /dev/kvm here); libvirtd checks them at start.
# - virtlogd must run before libvirtd: QEMU's console/log output goes through it.
# - PID 1 in these sandboxes reaps children slowly, which adds ~1.6 s to every destroy/save;
#   running libvirtd under `tini -s` (a subreaper) reaps QEMU promptly.
set -euo pipefail

readonly URI="qemu:///system"
readonly SOCKET="/run/libvirt/libvirt-sock"
readonly TINI_PIDFILE="/run/vwnet-libvirtd-tini.pid"
readonly LIBVIRTD_PIDFILE="/run/libvirtd.pid"
readonly VIRTLOGD_PIDFILE="/run/virtlogd.pid"
readonly LIBVIRTD_LOG="/var/log/libvirt/libvirtd-vwnet.log"
readonly QEMU_CONF="/etc/libvirt/qemu.conf"
readonly WAIT_SECS="${VWNET_LIBVIRTD_WAIT:-30}"

log() { echo "setup-libvirtd: $*"; }
die() {
    echo "setup-libvirtd: error: $*" >&2
    exit 1
}

answers() { virsh -q -c "$URI" version >/dev/null 2>&1; }

# A pid file names a live process only if the process exists now; stale files from a previous
# container run are common, and `kill -0` on a recycled pid is the accepted risk.
pid_alive() {
    local file=$1 pid
    [[ -s "$file" ]] || return 1
    pid=$(<"$file")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# Prints the installed version of a package, nothing when it is absent or not fully installed.
installed_version() {
    { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null || true; } |
        awk '$3 == "installed" {print $4}'
}

install_packages() {
    local base=(libvirt-dev libvirt-clients pkg-config libvirt-daemon libvirt-daemon-driver-qemu)
    local missing=() pkg sys_v utils_v
    for pkg in "${base[@]}" tini; do
        [[ -n "$(installed_version "$pkg")" ]] || missing+=("$pkg")
    done
    sys_v=$(installed_version qemu-system-x86)
    utils_v=$(installed_version qemu-utils)
    if ((${#missing[@]} == 0)) && [[ -n "$sys_v" && "$sys_v" == "$utils_v" ]]; then
        log "packages present (qemu $sys_v)"
        return
    fi

    log "installing: ${missing[*]:-} qemu-system-x86 qemu-utils (pinned)"
    apt-get update -qq
    local version=${VWNET_QEMU_VERSION:-}
    if [[ -z "$version" ]]; then
        version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    fi
    [[ -n "$version" && "$version" != "(none)" ]] || die "no installable qemu-system-x86 version"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
        "${base[@]}" "qemu-system-x86=$version" "qemu-utils=$version"
    # tini is an optimisation (prompt reaping); a mirror without it must not fail the setup.
    if [[ -z "$(installed_version tini)" ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tini ||
            log "tini unavailable: libvirtd will run without a subreaper (slower destroy/save)"
    fi
}

ensure_users() {
    getent group kvm >/dev/null || groupadd --system kvm
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
    if ! getent passwd libvirt-qemu >/dev/null; then
        useradd --system --gid libvirt-qemu --groups kvm --home-dir /var/lib/libvirt \
            --no-create-home --shell /usr/sbin/nologin libvirt-qemu
    fi
}

# Sets `key = "root"` in qemu.conf: drops any active assignment of the key, then appends ours,
# so a second run produces the same file.
set_qemu_conf() {
    local key=$1 value=$2
    sed -i -E "/^[[:space:]]*${key}[[:space:]]*=/d" "$QEMU_CONF"
    printf '%s = "%s"\n' "$key" "$value" >>"$QEMU_CONF"
}

configure() {
    mkdir -p /etc/libvirt /var/log/libvirt/qemu /run/libvirt /var/lib/libvirt/images \
        /var/lib/libvirt/qemu /var/cache/libvirt/qemu
    touch "$QEMU_CONF"
    set_qemu_conf user root
    set_qemu_conf group root
}

start_daemons() {
    if answers; then
        log "libvirtd already answers on $URI"
        return
    fi
    if ! pid_alive "$VIRTLOGD_PIDFILE"; then
        log "starting virtlogd"
        virtlogd -d
    fi
    if pid_alive "$LIBVIRTD_PIDFILE"; then
        die "libvirtd (pid $(<"$LIBVIRTD_PIDFILE")) runs but does not answer on $URI; see $LIBVIRTD_LOG"
    fi
    # A socket left by a killed daemon would make the wait below connect to nothing.
    rm -f "$SOCKET" "$SOCKET-ro" "$SOCKET-admin"
    log "starting libvirtd"
    if command -v tini >/dev/null; then
        # libvirtd stays in the foreground under tini; setsid detaches both from this shell.
        setsid tini -s -- libvirtd >>"$LIBVIRTD_LOG" 2>&1 </dev/null &
        echo $! >"$TINI_PIDFILE"
    else
        libvirtd -d >>"$LIBVIRTD_LOG" 2>&1 </dev/null
    fi

    local deadline=$((SECONDS + WAIT_SECS))
    until answers; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$LIBVIRTD_LOG" >&2 || true
            die "libvirtd did not answer on $URI within ${WAIT_SECS}s (log: $LIBVIRTD_LOG)"
        fi
        sleep 0.1
    done
    log "libvirtd answers on $URI (socket $SOCKET)"
}

# Sends SIGTERM to the process in a pid file and waits (bounded) for it to exit.
stop_pidfile() {
    local file=$1 name=$2 pid
    if ! pid_alive "$file"; then
        rm -f "$file"
        return
    fi
    pid=$(<"$file")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || die "$name (pid $pid) did not exit after SIGTERM"
        sleep 0.1
    done
    rm -f "$file"
}

stop_daemons() {
    local force=${1:-}
    if answers; then
        local running
        running=$(virsh -q -c "$URI" list --name | sed '/^$/d')
        if [[ -n "$running" ]]; then
            [[ "$force" == "--force" ]] ||
                die "domains still running (stop them or pass --force to destroy them): $running"
            local dom
            while read -r dom; do
                log "destroying $dom"
                virsh -q -c "$URI" destroy "$dom" >/dev/null
            done <<<"$running"
        fi
    fi
    # libvirtd first (it may still log through virtlogd); tini exits when its child does.
    stop_pidfile "$LIBVIRTD_PIDFILE" libvirtd
    stop_pidfile "$TINI_PIDFILE" tini
    stop_pidfile "$VIRTLOGD_PIDFILE" virtlogd
    log "stopped"
}

main() {
    local action=${1:-start}
    if [[ "$action" == "status" ]]; then
        answers && log "running" && exit 0
        log "not running"
        exit 1
    fi
    ((EUID == 0)) || die "must run as root (it installs packages and runs libvirtd)"
    case "$action" in
    start)
        install_packages
        ensure_users
        configure
        start_daemons
        ;;
    stop) stop_daemons "${2:-}" ;;
    *) die "unknown action '$action' (start|status|stop [--force])" ;;
    esac
}

main "$@"
