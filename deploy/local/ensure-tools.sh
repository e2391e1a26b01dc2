#!/usr/bin/env bash
# Make sure the tools the deploy checks run are installed: systemd-analyze (the systemd units)
# and promtool (the alert rules; from Debian's prometheus package, whose server is left stopped);
# curl and jq (docs/operations.md's API examples, run as printed by the tests).
# Installs Debian's packages when run as root with apt, and otherwise says what to run. kubectl is
# in neither Debian's nor PyPI's packages: the kustomize build runs where it is installed (the
# manifests are schema-validated everywhere). Used by .ci/run.
set -euo pipefail

say() { printf 'ensure-tools: %s\n' "$*" >&2; }

missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v promtool >/dev/null || missing+=(prometheus)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} from the distribution's packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    say "missing: ${missing[*]}. Install them with: sudo apt-get install -y ${missing[*]}"
    exit 1
fi
