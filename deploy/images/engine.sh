#!/usr/bin/env bash
# weir's own Docker engine: Debian's dockerd with a data root, exec root, pidfile
# and unix socket of its own under ~/.cache/weir/engine (WEIR_ENGINE_DIR), so it
# never meets a system engine. Compose and the image build talk to it through
# DOCKER_HOST; `stop` ends it by its PID.
#
#   deploy/images/engine.sh install   # dockerd from Debian (docker.io) when missing, and
#                                     # Docker Compose v2 built with Go (the Go module proxy)
#   deploy/images/engine.sh start     # start it (idempotent); prints its DOCKER_HOST
#   deploy/images/engine.sh env       # `export DOCKER_HOST=… DOCKER_CONFIG=…`, for eval
#   deploy/images/engine.sh stop      # stop it by PID, wait until it has exited
#   deploy/images/engine.sh status    # exit 0 when it answers
#
# Runs as root (dockerd needs it), or through sudo.
set -euo pipefail

DIR=${WEIR_ENGINE_DIR:-$HOME/.cache/weir/engine}
SOCK=$DIR/docker.sock
PIDFILE=$DIR/dockerd.pid
LOG=$DIR/dockerd.log
START_S=${WEIR_ENGINE_START_S:-60}   # dockerd answers in a few seconds; more on a loaded machine
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
export DOCKER_HOST=unix://$SOCK

# Docker Compose v2, pinned, built from its Go module (its go.mod has exclude
# directives, so `go install pkg@version` refuses it: download, then build) into
# the cache; `docker compose` finds it as a CLI plugin of this DOCKER_CONFIG.
COMPOSE_VERSION=v2.40.3
CACHE=$(dirname "$DIR")
COMPOSE=$CACHE/bin/docker-compose-$COMPOSE_VERSION
export DOCKER_CONFIG=$CACHE/docker

pid() {  # the PID of our dockerd, if it is running
  [ -f "$PIDFILE" ] || return 1
  local p; p=$(cat "$PIDFILE")
  [ -n "$p" ] && [ -d "/proc/$p" ] && grep -q dockerd "/proc/$p/cmdline" 2>/dev/null && echo "$p"
}

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

case "${1:-}" in
install)
  if ! command -v dockerd >/dev/null; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      docker.io >/dev/null
  fi
  if [ ! -x "$COMPOSE" ]; then
    src=$(cd /tmp && go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" \
      | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [ -n "$src" ] || { echo "could not download docker/compose $COMPOSE_VERSION" >&2; exit 1; }
    mkdir -p "$(dirname "$COMPOSE")"
    (cd "$src" && GOFLAGS=-mod=mod go build -trimpath -o "$COMPOSE.part" \
      -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" ./cmd)
    mv "$COMPOSE.part" "$COMPOSE"
  fi
  mkdir -p "$DOCKER_CONFIG/cli-plugins"
  ln -sfn "$COMPOSE" "$DOCKER_CONFIG/cli-plugins/docker-compose"
  ;;
start)
  mkdir -p "$DIR"
  if ! pid >/dev/null; then
    # --bridge=none: no docker0, so a system engine's bridge is never touched; compose
    # makes a network of its own per project. containerd is dockerd's own child here.
    $SUDO dockerd \
      --host "$DOCKER_HOST" \
      --data-root "$DIR/data" \
      --exec-root "$DIR/exec" \
      --pidfile "$PIDFILE" \
      --storage-driver overlay2 \
      --bridge none \
      --log-level warn \
      >>"$LOG" 2>&1 &
  fi
  deadline=$((SECONDS + START_S))
  until answers; do
    if [ $SECONDS -ge $deadline ]; then
      echo "dockerd did not answer on $SOCK within ${START_S}s; its log, $LOG:" >&2
      tail -n 30 "$LOG" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "$DOCKER_HOST"
  ;;
env)
  echo "export DOCKER_HOST=$DOCKER_HOST DOCKER_CONFIG=$DOCKER_CONFIG"
  ;;
status)
  answers
  ;;
stop)
  if p=$(pid); then
    $SUDO kill -TERM "$p"
    deadline=$((SECONDS + START_S))
    while [ -d "/proc/$p" ]; do
      if [ $SECONDS -ge $deadline ]; then
        echo "dockerd ($p) still running after ${START_S}s; killing it" >&2
        $SUDO kill -KILL "$p"
        break
      fi
      sleep 0.2
    done
  fi
  rm -f "$PIDFILE"
  ;;
*)
  echo "usage: $0 install|start|env|status|stop" >&2
  exit 2
  ;;
esac
