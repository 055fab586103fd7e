#!/usr/bin/env bash
# Builds a stand-in for node:20-bookworm-slim without a container registry: a Debian bookworm
# minbase root filesystem from Debian's own mirror (mmdebstrap), plus this machine's Node 20 and npm,
# imported as a local image. Cached: does nothing when the tag already exists (FORCE=1 rebuilds).
#
#   tools/containers/build-base.sh [TAG]        # default localhost/dsi-node:20-bookworm
#
# Needs root, mmdebstrap and podman (apt-get install -y podman runc mmdebstrap).
set -euo pipefail

TAG="${1:-${DSI_NODE_IMAGE:-localhost/dsi-node:20-bookworm}}"
# The mirror apt uses here (/etc/apt/sources.list*); override with DEBIAN_MIRROR.
MIRROR="${DEBIAN_MIRROR:-}"
if [ -z "$MIRROR" ]; then
  MIRROR="$(grep -rhoE '^(URIs:|deb)\s+https?://[^ ]+/debian/?(\s|$)' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null \
    | awk '{print $2}' | head -n1 || true)"
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
fi
MIRROR="${MIRROR%/}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}"

if [ "${FORCE:-0}" != 1 ] && podman image exists "$TAG"; then
  echo "build-base: $TAG exists (FORCE=1 to rebuild)"
  exit 0
fi

for tool in mmdebstrap podman; do
  command -v "$tool" > /dev/null || { echo "build-base: $tool is missing: apt-get install -y podman runc mmdebstrap" >&2; exit 1; }
done

# This machine's Node and npm: <prefix>/bin/node and <prefix>/lib/node_modules/npm.
NODE_BIN="$(readlink -f "$(command -v node)")"
NODE_PREFIX="$(cd "$(dirname "$NODE_BIN")/.." && pwd)"
NPM_DIR="$NODE_PREFIX/lib/node_modules/npm"
NODE_VERSION="$("$NODE_BIN" --version)"
case "$NODE_VERSION" in
  v20.*) ;;
  *) echo "build-base: this machine's node is $NODE_VERSION; the image needs Node 20" >&2; exit 1 ;;
esac
[ -f "$NPM_DIR/bin/npm-cli.js" ] || { echo "build-base: npm not found at $NPM_DIR" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ROOTFS="$WORK/rootfs.tar"

echo "build-base: mmdebstrap bookworm from $MIRROR (node $NODE_VERSION from $NODE_PREFIX)"
# Trimmed like the -slim images: no documentation, manuals or locales beyond what dpkg keeps.
mmdebstrap --mode=root --variant=minbase --format=tar \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --customize-hook="copy-in '$NODE_BIN' /usr/local/bin" \
  --customize-hook="mkdir -p \"\$1/usr/local/lib/node_modules/npm\"" \
  --customize-hook="sync-in '$NPM_DIR' /usr/local/lib/node_modules/npm" \
  --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm"' \
  --customize-hook='ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"' \
  --customize-hook='chroot "$1" node --version' \
  --customize-hook='chroot "$1" npm --version' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$ROOTFS" \
  "deb $MIRROR bookworm main" \
  "deb $MIRROR bookworm-updates main" \
  "deb $SECURITY_MIRROR bookworm-security main"

# The same configuration as the official node images: node on PATH, `node` as the default command.
podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=${NODE_VERSION#v}" \
  --change 'CMD ["node"]' \
  --message "debian bookworm minbase (mmdebstrap) + node $NODE_VERSION" \
  "$ROOTFS" "$TAG"
podman image ls "$TAG"
