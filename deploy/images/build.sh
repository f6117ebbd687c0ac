#!/usr/bin/env bash
# Builds the images docker-compose.yml runs, on an engine that may reach no
# image registry (`make images`; the engine is deploy/images/engine.sh's, via
# DOCKER_HOST):
#
#   weir:latest                  deploy/Dockerfile with BASE=weir-local/python:3.11
#   weir-local/kafka:4.2.2       the Maven jars of `weir stack fetch`, Debian's Java 17
#   weir-local/minio:<version>   the `go install` build of `weir stack fetch`
#
# and the bases under them, from Debian's packages: weir-local/debian:bookworm
# (debootstrap --variant=minbase, its tarball cached under ~/.cache/weir/images)
# and weir-local/python:3.11 (Debian's python3.11 and a venv). Where a registry
# answers (WEIR_IMAGES_BASE=public, or `auto` finds python:3.11-slim), weir
# builds on the public base instead and the Kafka and MinIO images are not
# needed: the compose file's own images are pulled.
#
# The bases, Kafka and MinIO are built only when missing; weir:latest every time,
# since it carries the checkout's code (BuildKit's cache keeps that to seconds
# when nothing changed). Nothing is written to the repo.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${WEIR_CACHE:-$HOME/.cache/weir}
MODE=${WEIR_IMAGES_BASE:-auto}          # auto | public | local
CA_BUNDLE=${WEIR_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
SUITE=bookworm
DEBIAN_MIRROR=${WEIR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KAFKA_VERSION=$(sed -n 's|.*<kafka.version>\(.*\)</kafka.version>.*|\1|p' "$REPO/deploy/local/kafka/pom.xml")
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
mkdir -p "$CACHE/images"

DEBIAN_IMAGE=weir-local/debian:$SUITE
PYTHON_IMAGE=weir-local/python:3.11
KAFKA_IMAGE=weir-local/kafka:$KAFKA_VERSION
# the MinIO build `weir stack fetch` made: <cache>/minio-<version>/minio
MINIO_BIN=$(ls -d "$CACHE"/minio-*/minio 2>/dev/null | sort | tail -n 1 || true)

say() { echo "images: $*" >&2; }
have() { docker image inspect "$1" >/dev/null 2>&1; }

# BuildKit builds (secrets, RUN --mount). A client with buildx does them; so does
# Debian's docker.io client (20.10), which has BuildKit built in.
build() {
  if docker buildx version >/dev/null 2>&1; then
    docker build "$@"
  elif [ -x /usr/bin/docker ]; then
    DOCKER_BUILDKIT=1 /usr/bin/docker build "$@"
  else
    DOCKER_BUILDKIT=1 docker build "$@"
  fi
}

docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || {
  echo "no Docker engine answers at ${DOCKER_HOST:-the default socket}: run" \
    "\`deploy/images/engine.sh start\` and \`eval \"\$(deploy/images/engine.sh env)\"\` first" >&2
  exit 1
}

if [ "$MODE" = auto ]; then
  # a registry that answers gives the public base at once; here the lookup fails fast
  if timeout 60 docker pull -q python:3.11-slim >/dev/null 2>&1; then MODE=public; else MODE=local; fi
  say "base: $MODE"
fi

if [ "$MODE" = public ]; then
  build --progress plain --secret "id=ca-bundle,src=$CA_BUNDLE" \
    -f "$REPO/deploy/Dockerfile" -t weir:latest "$REPO"
  exit 0
fi

# ---- the Debian base: debootstrap minbase, imported --------------------------
if ! have "$DEBIAN_IMAGE"; then
  tarball=$CACHE/images/debian-$SUITE-minbase.tar
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || {
      $SUDO apt-get update -qq
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    root=$(mktemp -d "$CACHE/images/rootfs.XXXXXX")
    trap '$SUDO rm -rf "$root"' EXIT
    say "debootstrap --variant=minbase $SUITE (about a minute)"
    $SUDO debootstrap --variant=minbase "$SUITE" "$root" "$DEBIAN_MIRROR" >"$CACHE/images/debootstrap.log" 2>&1 \
      || { tail -n 20 "$CACHE/images/debootstrap.log" >&2; exit 1; }
    $SUDO rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    $SUDO tar --numeric-owner -C "$root" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    $SUDO rm -rf "$root"
    trap - EXIT
  fi
  say "import $DEBIAN_IMAGE"
  docker import -c 'CMD ["bash"]' -c 'ENV LANG=C.UTF-8' "$tarball" "$DEBIAN_IMAGE" >/dev/null
fi

# ---- Python 3.11 from Debian -------------------------------------------------
if ! have "$PYTHON_IMAGE"; then
  say "build $PYTHON_IMAGE"
  build --progress plain --network host --build-arg "DEBIAN=$DEBIAN_IMAGE" \
    -t "$PYTHON_IMAGE" "$REPO/deploy/images/python"
fi

# ---- weir itself: deploy/Dockerfile on that base -------------------------------
say "build weir:latest on $PYTHON_IMAGE"
build --progress plain --network host --build-arg "BASE=$PYTHON_IMAGE" \
  --secret "id=ca-bundle,src=$CA_BUNDLE" \
  -f "$REPO/deploy/Dockerfile" -t weir:latest "$REPO" >"$CACHE/images/build-weir.log" 2>&1 \
  || { tail -n 30 "$CACHE/images/build-weir.log" >&2; exit 1; }
docker image prune --force >/dev/null  # the weir:latest this one replaced, if any

# A temporary build context: the Dockerfile's folder plus the cached artifacts,
# hard-linked when the file system allows (no copy of the jars or the binary).
context() {
  local ctx; ctx=$(mktemp -d "$CACHE/images/context.XXXXXX")
  cp -r "$REPO/deploy/images/$1/." "$ctx/"
  echo "$ctx"
}
link() { cp -rl "$1" "$2" 2>/dev/null || cp -r "$1" "$2"; }

# ---- Kafka: the jars of `weir stack fetch` plus kafka-tools, Debian's JRE --------
if ! have "$KAFKA_IMAGE"; then
  libs=$CACHE/kafka-$KAFKA_VERSION/libs
  [ -f "$libs/.complete" ] || { echo "no Kafka jars in $libs: run \`weir stack fetch\` first" >&2; exit 1; }
  tools=$CACHE/kafka-tools-$KAFKA_VERSION
  if [ ! -f "$tools/.complete" ]; then
    say "fetch kafka-tools $KAFKA_VERSION (Maven Central)"
    mvn -B -q dependency:copy "-Dartifact=org.apache.kafka:kafka-tools:$KAFKA_VERSION" \
      "-DoutputDirectory=$tools" >"$CACHE/images/fetch-kafka-tools.log" 2>&1 \
      || { tail -n 20 "$CACHE/images/fetch-kafka-tools.log" >&2; exit 1; }
    touch "$tools/.complete"
  fi
  ctx=$(context kafka)
  link "$libs" "$ctx/libs"
  link "$tools/kafka-tools-$KAFKA_VERSION.jar" "$ctx/libs/"
  say "build $KAFKA_IMAGE"
  build --progress plain --network host --build-arg "DEBIAN=$DEBIAN_IMAGE" -t "$KAFKA_IMAGE" "$ctx" \
    || { rm -rf "$ctx"; exit 1; }
  rm -rf "$ctx"
fi

# ---- MinIO: the `go install` build ---------------------------------------------
[ -n "$MINIO_BIN" ] || { echo "no MinIO build under $CACHE: run \`weir stack fetch\` first" >&2; exit 1; }
MINIO_VERSION=$(basename "$(dirname "$MINIO_BIN")")
MINIO_IMAGE=weir-local/minio:${MINIO_VERSION#minio-}
if ! have "$MINIO_IMAGE"; then
  ctx=$(context minio)
  link "$MINIO_BIN" "$ctx/minio"
  say "build $MINIO_IMAGE"
  build --progress plain --network none --build-arg "DEBIAN=$DEBIAN_IMAGE" -t "$MINIO_IMAGE" "$ctx" \
    || { rm -rf "$ctx"; exit 1; }
  rm -rf "$ctx"
fi
# the override names one tag whatever the build's version
docker tag "$MINIO_IMAGE" weir-local/minio:latest
say "ready: weir:latest $KAFKA_IMAGE $MINIO_IMAGE"
