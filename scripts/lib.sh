# Shared helpers for the set-up scripts. Sourced, not run.
set -euo pipefail

KONTRAST_CACHE="${KONTRAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kontrast}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KONTRAST_CACHE REPO_ROOT
mkdir -p "$KONTRAST_CACHE"

log() { printf '\033[1;34m[kontrast]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[kontrast] error:\033[0m %s\n' "$*" >&2; exit 1; }

# Run apt-get as root, or through sudo when not root.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# apt-get against a private set of source lists under the cache, so the
# system's own /etc/apt configuration is never edited.
private_apt() {
  local dir="$KONTRAST_CACHE/apt"
  mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/parts"
  cat > "$dir/sources.list" <<LIST
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
LIST
  apt-get -q \
    -o Dir::Etc::SourceList="$dir/sources.list" \
    -o Dir::Etc::SourceParts="$dir/parts" \
    -o Dir::State::Lists="$dir/lists" \
    -o Dir::Cache::Archives="$dir/archives" \
    -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" \
    -o APT::Sandbox::User=root \
    "$@"
}
