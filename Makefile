# The two commands (see README):
#   make demo   set everything up and run the main job (the end-to-end demo)
#   make test   lint, type-check and run every test against the real local stack
#
# Everything else they need is installed here: a virtualenv with the pinned
# Python packages, Kafka's jars from Maven Central and a MinIO server built
# with `go install` (both cached under ~/.cache/weir, never in the repo).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup demo test lint deps-browser deps-kustomize deps-docker images engine-stop stack-up stack-down clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/weir stack fetch
	$(BIN)/weir demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Debian's Chromium, for the status page's browser test (tests/integration/test_live_view.py).
# Idempotent: installs only when /usr/bin/chromium is absent (as root, or through sudo).
CHROMIUM = /usr/bin/chromium
SUDO     = $(if $(filter 0,$(shell id -u)),,sudo)

deps-browser:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

# kustomize, pinned, built with `go install` from the Go module proxy and cached
# outside the repo: tests/unit/test_kustomize_build.py renders deploy/k8s with it,
# as `kubectl kustomize` in the README does.
KUSTOMIZE_VERSION = v5.7.1
KUSTOMIZE = $(HOME)/.cache/weir/bin/kustomize-$(KUSTOMIZE_VERSION)

deps-kustomize:
	@test -x $(KUSTOMIZE) || { tmp=$$(mktemp -d) && \
		GOBIN=$$tmp go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION) && \
		mkdir -p $(dir $(KUSTOMIZE)) && mv $$tmp/kustomize $(KUSTOMIZE) && rmdir $$tmp; }

# docker compose, for real (README "docker compose, for real"): Debian's dockerd
# and Docker Compose v2 (built with Go, cached under ~/.cache/weir), an engine of
# the project's own (its socket, data root and pidfile under ~/.cache/weir/engine),
# and the images docker-compose.yml + deploy/compose.local.yml run, built from
# Debian packages where no image registry answers. tests/integration/
# test_compose_docker.py starts (and stops) the engine and builds the images itself.
ENGINE = deploy/images/engine.sh

deps-docker:
	$(ENGINE) install

images: setup deps-docker
	$(BIN)/weir stack fetch
	$(ENGINE) start
	eval "$$($(ENGINE) env)" && deploy/images/build.sh

engine-stop:
	$(ENGINE) stop

# The test session starts the stack itself (tests/conftest.py) and stops what it
# started; `stack fetch` first fills the cache so no test waits on a download.
test: setup lint deps-browser deps-kustomize deps-docker
	$(BIN)/weir stack fetch
	$(BIN)/pytest

stack-up: setup
	$(BIN)/weir stack up

stack-down: setup
	$(BIN)/weir stack down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
