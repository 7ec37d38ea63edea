# Sourced by the scripts that drive headless Chromium (test-browser, test-topology): Debian's
# chromium, node and npm when missing, and browser-tests/node_modules (npm ci only when the
# lock file changed since the last install). Needs `cd` to the repository root first.

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

# Installs Debian packages that are missing: apt_install PACKAGE...
apt_install() {
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

ensure_browser_env() {
  export SURGE_CHROMIUM="${SURGE_CHROMIUM:-/usr/bin/chromium}"
  if [ ! -x "$SURGE_CHROMIUM" ]; then
    echo "installing Debian's chromium"
    apt_install chromium
  fi
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "installing Debian's nodejs and npm"
    apt_install nodejs npm
  fi
  if ! cmp -s browser-tests/package-lock.json browser-tests/node_modules/.package-lock.json.src 2>/dev/null \
    || [ ! -d browser-tests/node_modules/playwright-core ]; then
    echo "npm ci (browser-tests)"
    (cd browser-tests && npm ci --no-audit --no-fund --loglevel=error)
    cp browser-tests/package-lock.json browser-tests/node_modules/.package-lock.json.src
  fi
}
