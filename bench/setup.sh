#!/usr/bin/env bash
# Installs the benchmark-only tools from Debian packages when missing: PgBouncer (the baseline),
# pgbench/PostgreSQL (the load and the server), gnuplot-nox (the chart), strace and linux-perf
# (system-call counts). Safe to run repeatedly; needs root (or sudo) only when something is
# missing. A package the archive does not have is skipped with a note: the suite measures what
# it can without it.
set -euo pipefail

packages=(pgbouncer postgresql postgresql-client procps gnuplot-nox strace linux-perf)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
echo "bench/setup.sh: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -qq || true
if ! "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  # Install one by one so that one unavailable package does not block the others.
  for pkg in "${missing[@]}"; do
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$pkg" \
      || echo "bench/setup.sh: $pkg not available; the report will say what it could not measure"
  done
fi
