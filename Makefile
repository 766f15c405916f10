# The two commands a user needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# postgresql: fleet-server's tests start a private cluster (initdb/pg_ctl from
# /usr/lib/postgresql/<version>/bin; pg_ctlcluster tells the package is there).
APT_PACKAGES := mosquitto mosquitto-clients postgresql
# podman (+ runc, see containers.conf) runs the images in the container tests;
# debootstrap makes their base image where no image registry can be reached.
CONTAINER_APT_PACKAGES := podman runc debootstrap uidmap fuse-overlayfs slirp4netns
APT_COMMANDS := mosquitto mosquitto_pub pg_ctlcluster
# Debian's chromium and its chromedriver: the dashboard's browser tests and bench drive them.
BROWSER_APT_PACKAGES := chromium chromium-driver
BROWSER_APT_COMMANDS := chromium chromedriver
CONTAINER_APT_COMMANDS := podman runc debootstrap

# Container images (docs/containers.md). The project containers.conf (runc, lower ulimits)
# is used by every podman command started from here, tests included.
export CONTAINERS_CONF ?= $(CURDIR)/containers.conf
VERSION := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n 1)
# A local Debian bookworm + python3 made with debootstrap (no registry needed). With a
# registry: make images BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
BASE_IMAGE ?= localhost/fleet-python:bookworm
CONNECTOR_IMAGE ?= localhost/fleet-connector
SENDER_IMAGE ?= localhost/vehicle-data-sender
IMAGE_SOURCE ?= $(shell git remote get-url origin 2>/dev/null)
WHEELS := build/wheels
IMAGE_INPUTS := pyproject.toml car/pyproject.toml Containerfile.connector Containerfile.sender \
	$(shell find ankaios_model fleet_connector vehicle_data_sender -name '*.py' -o -name '*.json' 2>/dev/null)

.PHONY: setup setup-containers apt apt-containers apt-browser venv test test-quick test-containers lint demo bench clean images base-image wheels

setup: apt venv

setup-containers: setup apt-containers

# Installs packages whose commands are missing (needs root or sudo).
define apt_install
	@missing=; for c in $(1); do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing packages (missing:$$missing)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(2); \
	fi
endef

# The broker and its clients.
apt:
	$(call apt_install,$(APT_COMMANDS),$(APT_PACKAGES))

# podman & co. for the images and the container tests.
apt-containers:
	$(call apt_install,$(CONTAINER_APT_COMMANDS),$(CONTAINER_APT_PACKAGES))

# chromium for the dashboard's browser tests (tests/dashboard) and its bench.
apt-browser:
	$(call apt_install,$(BROWSER_APT_COMMANDS),$(BROWSER_APT_PACKAGES))

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,dashboard,terminal,server]'
	touch $@

# Everything, the container tests included (they need the images: built here first).
test: setup-containers apt-browser images
	$(PY) -m pytest

# Without podman: every test except the container tests.
test-quick: setup apt-browser
	$(PY) -m pytest -m "not containers"

test-containers: setup-containers images
	$(PY) -m pytest -m containers

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: setup
	$(PY) demo/tutorial.py

# Debian bookworm + python3 without a registry: debootstrap from the host's apt mirror,
# then podman import. Kept once built (FORCE=1 rebuilds). Only for localhost/ names.
base-image:
	@case "$(BASE_IMAGE)" in \
		localhost/*) SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
			$$SUDO env CONTAINERS_CONF="$(CONTAINERS_CONF)" FORCE="$(FORCE)" \
				scripts/make-base-image.sh "$(BASE_IMAGE)" ;; \
		*) echo "base image $(BASE_IMAGE) comes from its registry" ;; \
	esac

# The car's wheel (car/pyproject.toml: connector, model, sender; docs/containers.md, "What
# ships where") and its dependencies, built on the host so the image builds need no network.
wheels: $(WHEELS)/.built

$(WHEELS)/.built: $(VENV)/.installed $(IMAGE_INPUTS)
	rm -rf $(WHEELS)
	$(PY) -m pip wheel -q -w $(WHEELS) ./car
	touch $@

# Figures, not tests (bench/README.md): latency, throughput, footprint, a fleet of 1,000 cars
# (--cars) on mosquitto, on two bridged mosquittos and on a 3-node NATS cluster, the dashboard
# and live states. Installs nats-server when missing. BENCH_ARGS passes options, e.g.
# make bench BENCH_ARGS="--only latency --samples 200".
bench: setup apt-browser
	@PATH="$$PATH:/usr/sbin:/sbin" command -v nats-server >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q nats-server; }
	PATH="$$PATH:/usr/sbin:/sbin" $(PY) -m bench $(BENCH_ARGS)

# localhost/fleet-connector and localhost/vehicle-data-sender, tagged $(VERSION) and latest.
# Rebuilt when the sources change, or when an image has gone from podman's storage.
images: setup-containers
	@podman image exists $(CONNECTOR_IMAGE):$(VERSION) && podman image exists $(SENDER_IMAGE):$(VERSION) \
		|| rm -f build/images.built
	@$(MAKE) --no-print-directory build/images.built

build/images.built: $(WHEELS)/.built | base-image
	podman build --network=none --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg VERSION=$(VERSION) $(if $(IMAGE_SOURCE),--build-arg SOURCE=$(IMAGE_SOURCE)) \
		-f Containerfile.connector -t $(CONNECTOR_IMAGE):$(VERSION) -t $(CONNECTOR_IMAGE):latest .
	podman build --network=none --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg VERSION=$(VERSION) $(if $(IMAGE_SOURCE),--build-arg SOURCE=$(IMAGE_SOURCE)) \
		-f Containerfile.sender -t $(SENDER_IMAGE):$(VERSION) -t $(SENDER_IMAGE):latest .
	@# untagged leftovers of ours only: build stages and images replaced by this build
	@for label in fleet-connector.build-stage=true org.opencontainers.image.title=fleet-connector \
		org.opencontainers.image.title=vehicle-data-sender; do \
		podman image prune --force --filter label=$$label >/dev/null; done
	@podman images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' \
		| grep -E '^($(CONNECTOR_IMAGE)|$(SENDER_IMAGE)):$(VERSION) '
	echo "$(BASE_IMAGE) $(VERSION)" > $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info build car/*.egg-info car/build
