# Shared by the scripts (`source scripts/lib.sh`): fail loudly, and install what is missing
# with apt-get when running as root; never skip silently.

die() { printf '\nerror: %s\n' "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

# apt_install PKG...: installs the Debian packages (needs root and apt-get), or dies saying so.
apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        die "$* missing and cannot be installed here (needs root and apt-get); install it (apt-get install -y $*) and re-run"
    fi
    step "installing $* with apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; } \
        || die "installing $* with apt-get failed"
}

# ensure CMD [PKG...]: CMD on PATH, else the packages (default: CMD) installed, else die.
ensure() {
    local cmd=$1
    shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    step "$cmd not found"
    if [ $# -eq 0 ]; then apt_install "$cmd"; else apt_install "$@"; fi
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd still not found after installing it"
}

# stop_all DIR: the EXIT trap of the benchmark scripts. Stops the script's background jobs and
# every daemon whose pid file is DIR/*.pid (nginx), then removes DIR. `set +e` first: a trap
# runs under the script's `set -e`, and a `kill` with nothing left to kill must not end it
# before the rest is stopped.
stop_all() {
    set +e
    local jobs_left
    jobs_left=$(jobs -p)
    [ -n "$jobs_left" ] && kill $jobs_left 2>/dev/null
    local f
    for f in "$1"/*.pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
    done
    rm -rf "$1"
}
