#!/usr/bin/env bash
# Builds deploy/Dockerfile with podman on the stand-in base (tools/containers/build-base.sh), no
# registry needed. Layers are cached in podman's storage, so a rebuild after a source change reruns
# only `COPY . .` onwards.
#
#   tools/containers/build-image.sh [TAG]       # default localhost/dsi:dev
#
# Environment: DSI_NODE_IMAGE (the base, default localhost/dsi-node:20-bookworm), DSI_OCI_RUNTIME
# (default runc: crun refuses hybrid cgroup hosts), NODE_EXTRA_CA_CERTS (a TLS-intercepting proxy's
# CA: handed to `npm ci` as a build secret, never stored in a layer). Proxy variables (HTTP_PROXY,
# HTTPS_PROXY, NO_PROXY) reach the build through podman's --http-proxy (on by default).
set -euo pipefail
cd "$(dirname "$0")/../.."

TAG="${1:-localhost/dsi:dev}"
BASE="${DSI_NODE_IMAGE:-localhost/dsi-node:20-bookworm}"
RUNTIME="${DSI_OCI_RUNTIME:-runc}"

podman image exists "$BASE" || tools/containers/build-base.sh "$BASE"

secret=()
if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -s "$NODE_EXTRA_CA_CERTS" ]; then
  secret=(--secret "id=ca,src=$NODE_EXTRA_CA_CERTS")
fi

# --ignorefile: podman 4.3 does not pick up deploy/Dockerfile.dockerignore by itself (BuildKit does).
podman build \
  --file deploy/Dockerfile \
  --ignorefile deploy/Dockerfile.dockerignore \
  --build-arg "NODE_IMAGE=$BASE" \
  --pull=never \
  --runtime "$RUNTIME" \
  --layers \
  "${secret[@]}" \
  --tag "$TAG" \
  .
podman image ls "$TAG"
