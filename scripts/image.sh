#!/usr/bin/env bash
# Builds the marketplace image (Containerfile) on a machine with no container registry: the
# binaries come from `cargo build --release` on the host, the Debian base from mmdebstrap (Debian's
# packages, imported into podman as localhost/marketplace-base:bookworm), the engine is Debian's
# podman. Then prints the image's size and runs `gateway --help` in it (podman run, or, where this
# machine refuses containers, the image's root filesystem under chroot).
#
#   scripts/image.sh                 # build localhost/marketplace:<git describe> (+ :latest)
#   IMAGE=reg.example/marketplace:1.2 scripts/image.sh
#   SKIP_CARGO_BUILD=1 scripts/image.sh   # reuse target/release
#   IMAGE_ROOTFS=1 scripts/image.sh  # also unpack the image into .stack/image/rootfs
#
# Where a registry is reachable, `podman build -t marketplace .` alone does all of this (README,
# "Deploying"). Knobs: PODMAN_STORAGE_DRIVER (vfs by default: works inside containers and VMs
# without overlay support), BASE_SUITE (bookworm), DEBIAN_MIRROR.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
log() { printf '\033[1;34m[image]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[image]\033[0m %s\n' "$*" >&2; exit 1; }

VERSION="$(git describe --tags --always --dirty 2>/dev/null || echo dev)"
IMAGE="${IMAGE:-localhost/marketplace:$VERSION}"
BASE_SUITE="${BASE_SUITE:-bookworm}"
BASE_IMAGE="localhost/marketplace-base:$BASE_SUITE"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
WORK="$ROOT/.stack/image"
mkdir -p "$WORK"

# Debian's podman, mmdebstrap (the base) and runc (crun refuses this machine's hybrid cgroups).
missing=()
for tool in podman mmdebstrap runc newuidmap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing podman, mmdebstrap, runc, uidmap from Debian's packages (missing: ${missing[*]})"
  command -v apt-get >/dev/null 2>&1 || die "apt-get is needed to install ${missing[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah mmdebstrap runc uidmap) >/dev/null \
    || die "cannot install podman/mmdebstrap"
fi

PODMAN=(podman --storage-driver "${PODMAN_STORAGE_DRIVER:-vfs}" --runtime runc)
# Containers may not raise limits above the caller's (no CAP_SYS_RESOURCE in a sandbox): ask for
# exactly what this shell has.
# (nproc: above ~20,000 runc is refused here whatever this shell's limit; a build needs few.)
ULIMITS=(--ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")

# 1. The Debian base: minbase plus ca-certificates, documentation left out (like bookworm-slim).
if ! "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
  log "making the Debian $BASE_SUITE base with mmdebstrap ($DEBIAN_MIRROR)"
  mmdebstrap --variant=minbase --include=ca-certificates --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$BASE_SUITE" "$WORK/debian-$BASE_SUITE.tar" "$DEBIAN_MIRROR" >"$WORK/mmdebstrap.log" 2>&1 \
    || die "mmdebstrap failed (see .stack/image/mmdebstrap.log)"
  "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$WORK/debian-$BASE_SUITE.tar" "$BASE_IMAGE" >/dev/null
  rm -f "$WORK/debian-$BASE_SUITE.tar"
fi

# 2. The binaries: the release profile, symbols stripped (as the Containerfile's source build).
if [ "${SKIP_CARGO_BUILD:-0}" != 1 ]; then
  log "cargo build --release --workspace --bins"
  CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --workspace --bins
fi

# 3. The image.
log "building $IMAGE"
"${PODMAN[@]}" build "${ULIMITS[@]}" --format docker --file Containerfile --tag "$IMAGE" \
  --build-arg BUILD=prebuilt --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg VERSION="$VERSION" --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  .
[ "$IMAGE" = "localhost/marketplace:latest" ] || "${PODMAN[@]}" tag "$IMAGE" localhost/marketplace:latest

size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
log "$IMAGE: $((size / 1024 / 1024)) MiB ($size bytes)"

# 4. Proof that it runs: gateway --help in a container, else in the image's root filesystem.
if "${PODMAN[@]}" run --rm "${ULIMITS[@]}" --network none "$IMAGE" gateway --help >"$WORK/gateway-help.txt" 2>"$WORK/podman-run.log"; then
  log "podman run --rm $IMAGE gateway --help:"
  cat "$WORK/gateway-help.txt"
  ran=1
else
  log "podman run refused here ($(tail -n 1 "$WORK/podman-run.log")); using the image's root filesystem"
  ran=0
fi
if [ "$ran" = 0 ] || [ "${IMAGE_ROOTFS:-0}" = 1 ]; then
  rm -rf "$WORK/rootfs" && mkdir -p "$WORK/rootfs"
  container=$("${PODMAN[@]}" create "$IMAGE")
  "${PODMAN[@]}" export "$container" | tar -x -C "$WORK/rootfs"
  "${PODMAN[@]}" rm "$container" >/dev/null
  log "unpacked into .stack/image/rootfs"
  # One launcher per binary that runs it inside the image's root filesystem as the image's user
  # (exec: the pid is the binary's, so signals and SIGKILL reach it): the system tests run against
  # the image with MARKETPLACE_BIN_DIR=.stack/image/bin.
  mkdir -p "$WORK/bin"
  for binary in "$WORK"/rootfs/usr/local/bin/*; do
    name=$(basename "$binary")
    printf '#!/bin/sh\n# Runs the image'"'"'s %s (scripts/image.sh).\nexport WEB_ROOT=/app/web\nexec chroot --userspec=10001:10001 %q /usr/local/bin/%s "$@"\n' \
      "$name" "$WORK/rootfs" "$name" >"$WORK/bin/$name"
    chmod +x "$WORK/bin/$name"
  done
  log "launchers in .stack/image/bin (MARKETPLACE_BIN_DIR=.stack/image/bin runs the system tests on them)"
  if [ "$ran" = 0 ]; then
    log "chroot --userspec=10001:10001 .stack/image/rootfs gateway --help:"
    chroot --userspec=10001:10001 "$WORK/rootfs" /usr/local/bin/gateway --help
  fi
fi
