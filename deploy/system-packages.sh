#!/usr/bin/env bash
# The Debian packages the engine and its tests need beyond Python: CJK fonts for the patient's slip (embedded in
# its PDF), poppler-utils to read PDFs back in the tests, and Chromium for the console's browser tests.
# Installs what is missing when run as root (make test and .ci/run call it); otherwise names the command to run.
set -euo pipefail
PACKAGES=(fonts-noto-cjk poppler-utils chromium)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${missing[@]}" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
