#!/usr/bin/env bash
# System packages the tests and the video pipeline need (Debian/Ubuntu, as root).
# The Pub/Sub emulator (google-cloud-cli-pubsub-emulator) and PostgreSQL are expected to be
# installed already on the development and CI machines; this adds what may be missing.
set -euo pipefail
packages=(redis-server ffmpeg espeak-ng docker-compose curl chromium)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
# Node.js and npm run the interop tests' producer; any packaging of them will do.
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
