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
