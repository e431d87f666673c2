# Helpers for scripts/smoke-test and scripts/check-budget: run a router build of medic, under
# qemu-user when its architecture is not the host's. Sourced, not run.

# The qemu-user binary for a target ("" when the host runs it natively).
qemu_for() {
    local host
    host=$(uname -m)
    case $1 in
    "$host"-*) echo "" ;;
    aarch64-*) echo qemu-aarch64-static ;;
    armv7-*) echo qemu-arm-static ;;
    mipsel-*) echo qemu-mipsel-static ;;
    x86_64-*) echo qemu-x86_64-static ;;
    *)
        echo "unknown target $1" >&2
        return 1
        ;;
    esac
}

# Guest memory placement under qemu-user: the whole guest address space is one reserved host
# range (-R size, -B base), so the guest's resident memory is exactly the resident pages of
# the qemu process inside that range (qemu's own code, heap and translated-code buffer lie
# outside it). 4 GiB: all of a 32-bit guest's address space.
QEMU_GUEST_BASE=$((0x10000000000))
QEMU_GUEST_SIZE=$((0x100000000))

# Sets RUN (an array) to the command prefix that runs TARGET's binary.
set_runner() {
    local q
    q=$(qemu_for "$1") || return 1
    RUN=()
    if [ -n "$q" ]; then
        if ! command -v "$q" >/dev/null 2>&1; then
            if [ "$(id -u)" = 0 ]; then
                apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
            else
                echo "$q missing: apt-get install qemu-user-static" >&2
                return 1
            fi
        fi
        RUN=("$q" -B "$(printf '0x%x' "$QEMU_GUEST_BASE")")
        # A 32-bit guest gets its whole 4 GiB reserved at the base anyway (and qemu 7.2's -R
        # trips an assertion for it); a 64-bit guest needs -R to stay inside the range.
        case $1 in
        aarch64-* | x86_64-*) RUN+=(-R "$(printf '0x%x' "$QEMU_GUEST_SIZE")") ;;
        esac
    fi
}

# Resident memory of a running medic in KiB: VmRSS when native; under qemu, the resident pages
# of the guest's address range (see above).
rss_kib() {
    local pid=$1
    if [ ${#RUN[@]} = 0 ]; then
        awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"
        return
    fi
    local lo=$QEMU_GUEST_BASE hi=$((QEMU_GUEST_BASE + QEMU_GUEST_SIZE)) inside=0 kib=0 a b
    while read -r a b _; do
        if [[ $a =~ ^([0-9a-f]+)-[0-9a-f]+$ ]]; then
            local start=$((16#${BASH_REMATCH[1]}))
            inside=$((start >= lo && start < hi))
        elif [ "$a" = Rss: ] && [ $inside = 1 ]; then
            kib=$((kib + b))
        fi
    done <"/proc/$pid/smaps"
    echo "$kib"
}

# `medic status` through the runner, for the daemon whose state directory is STATE.
status() {
    "${RUN[@]}" "$BIN" status --state-dir "$STATE" 2>/dev/null
}

# `medic status` as "NAME CONDITION PID" lines, the columns found by their headers (the table
# may gain or lose columns; free-text columns come after these).
status_columns() {
    # The table's header is the first line that starts with NAME (a line about the daemon may
    # come before it).
    status | awk '!h && $1 == "NAME" { for (i = 1; i <= NF; i++) col[$i] = i; h = 1; next }
        h { print $col["NAME"], $col["CONDITION"], $col["PID"] }'
}

# How many services are `ready`.
ready_count() {
    status_columns | awk '$2 == "ready" { n++ } END { print n + 0 }'
}

# The pid of a ready SERVICE, or nothing.
ready_pid() {
    status_columns | awk -v s="$1" '$1 == s && $2 == "ready" && $3 ~ /^[0-9]+$/ { print $3 }'
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# wait_for SECONDS WHAT COMMAND...: run COMMAND until it succeeds; fail after SECONDS.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$(($(now_ms) + secs * 1000))
    until "$@"; do
        if [ "$(now_ms)" -gt "$deadline" ]; then
            echo "timed out after ${secs}s waiting for $what" >&2
            return 1
        fi
        sleep 0.05
    done
}

# The session id of PID, or nothing when it is gone.
session_of() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    set -- ${stat##*) }
    echo "$4"
}

# The pids of every process in session SID.
session_members() {
    local sid=$1 p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$(session_of "$p")" = "$sid" ] && echo "$p"
    done
    return 0
}

# Succeeds when no process is left in any of the sessions given.
sessions_empty() {
    local sid
    for sid in "$@"; do
        [ -z "$(session_members "$sid")" ] || return 1
    done
}

# Succeeds once process PID has exited (it is a child of this shell: reaped by `wait` later).
exited() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    set -- ${stat##*) }
    [ "$1" = Z ]
}
