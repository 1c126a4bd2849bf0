# shellcheck shell=bash
# Sourceable helper: makes Debian's Chromium and its WebDriver (chromedriver)
# available for the dashboard's browser tests (tests/it/dashboard.rs), with a CJK
# font so the Chinese page renders in the screenshots.
#
#   source scripts/lib/browser.sh && yj_browser_ensure
#
# Debian's packages only: the browser tests never download a browser build of their
# own. A no-op when already installed; returns non-zero with a clear message when
# impossible.

# shellcheck source=scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

yj_browser_have() {
    [[ -x /usr/lib/chromium/chromium || -x /usr/bin/chromium ]] &&
        command -v chromedriver >/dev/null 2>&1 &&
        # grep reads the whole list: with -q it would stop at the first match and
        # fc-list's SIGPIPE would fail the check under `set -o pipefail`.
        fc-list 2>/dev/null | grep -i 'Noto Sans CJK' >/dev/null
}

yj_browser_ensure() {
    if yj_browser_have; then
        return 0
    fi
    yj_apt_install yj_browser chromium chromium-driver fonts-noto-cjk || return 1
    if ! yj_browser_have; then
        printf 'yj_browser: error: chromium, chromedriver or the CJK font is still missing after apt-get install\n' >&2
        return 1
    fi
    printf 'yj_browser: %s; %s\n' "$(chromedriver --version 2>/dev/null | head -1)" \
        "$(/usr/lib/chromium/chromium --version 2>/dev/null || chromium --version 2>/dev/null)" >&2
}
