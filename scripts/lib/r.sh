# shellcheck shell=bash
# Sourceable helper: makes `Rscript` with the R package `surveillance` available.
#
#   source scripts/lib/r.sh && yj_r_ensure
#
# The reference values for yujing's detectors (tests/it/detect_reference.rs) come from
# surveillance::earsC, surveillance::algo.glrnb and surveillance::farringtonFlexible. We
# install Debian's r-cran-surveillance (1.20.3 on Debian 12), never from CRAN: CRAN is not reachable from our machines, and the
# Debian package pins the version the tests were written against.
# A no-op when already installed; returns non-zero with a clear message when impossible.

yj_r_have_surveillance() {
    command -v Rscript >/dev/null 2>&1 &&
        Rscript -e 'quit(status = if (requireNamespace("surveillance", quietly = TRUE)) 0 else 1)' \
            >/dev/null 2>&1
}

yj_r_ensure() {
    if yj_r_have_surveillance; then
        return 0
    fi

    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "yj_r_ensure: need root or sudo to apt-get install r-cran-surveillance" >&2
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "yj_r_ensure: no apt-get here; install R and the R package 'surveillance' by hand" >&2
        return 1
    fi

    echo "yj_r_ensure: installing r-cran-surveillance (Debian package) ..." >&2
    # The package lists may be absent or stale on a fresh machine, so update first.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || {
        echo "yj_r_ensure: apt-get update failed" >&2
        return 1
    }
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        r-cran-surveillance >&2 || {
        echo "yj_r_ensure: apt-get install r-cran-surveillance failed" >&2
        return 1
    }

    if ! yj_r_have_surveillance; then
        echo "yj_r_ensure: installed, but Rscript still cannot load 'surveillance'" >&2
        return 1
    fi
    echo "yj_r_ensure: $(Rscript -e 'cat("R", as.character(getRversion()), "surveillance", as.character(packageVersion("surveillance")))' 2>/dev/null)" >&2
}
