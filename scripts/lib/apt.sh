# shellcheck shell=bash
# Installs Debian packages as root, or through passwordless sudo when available:
#   yj_apt_install TAG PACKAGE...      (TAG prefixes the messages on stderr)
# Sourced by the environment libraries (postgres.sh, tansu.sh).

yj_apt_install() {
    local tag=$1
    shift
    local -a sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            printf '%s: error: need Debian packages %s but not root and no passwordless sudo; install them: apt-get install -y %s\n' \
                "$tag" "'$*'" "$*" >&2
            return 1
        fi
    fi
    command -v apt-get >/dev/null 2>&1 || {
        printf "%s: error: need packages '%s' and apt-get is missing\n" "$tag" "$*" >&2
        return 1
    }
    printf '%s: installing Debian packages: %s\n' "$tag" "$*" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null || {
        printf '%s: error: apt-get install -y %s failed\n' "$tag" "$*" >&2
        return 1
    }
}
