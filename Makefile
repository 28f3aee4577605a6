# Entry points: `make test`, `make dev`, `make demo`. Each sets up .venv/ by itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test unit dev demo kind-e2e image-check faults binaries node-deps node-binaries node-if-possible cluster-e2e image graphviz crds check-crds clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# etcd, kube-apiserver, kube-controller-manager and versitygw, built from Go modules once and cached.
binaries:
	bash operator/mloop/localcluster/build-binaries.sh all

# The real test-bed node (`mloop dev up --node`): Debian's containerd, CNI plugins, podman, static busybox,
# debootstrap and iptables, installed when missing and root; kubelet, kube-scheduler, kube-proxy and runc
# (cgo + libseccomp) built beside the control plane.
NODE_PKGS := containerd containernetworking-plugins podman busybox-static debootstrap libseccomp-dev pkg-config iptables iproute2
node-deps:
	@missing=$$(for p in $(NODE_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "the real node needs Debian packages: $$missing (apt-get install them as root)" >&2; exit 1; fi; \
	fi

node-binaries: node-deps binaries
	bash operator/mloop/localcluster/build-binaries.sh node

# The mloop image, built with podman from local stand-ins of its base images (no registry needed); prints the
# archive the test-bed node imports. Cached under ~/.cache/mloop/images by a hash of its inputs.
image: $(STAMP) node-deps binaries
	bash operator/mloop/localcluster/build-images.sh

# make test runs the real-node tests where the node can run (root, Debian's packages): the node's own, and with
# the mloop image (built or taken from the cache, its archive's path kept in $(IMAGE_NOTE)) a TrainingRun killed
# for memory and the iris loop to a served prediction. Elsewhere they skip and say what is missing.
IMAGE_NOTE := $(VENV)/.mloop-image
node-if-possible: $(STAMP)
	-@$(MAKE) --no-print-directory node-binaries && bash operator/mloop/localcluster/build-images.sh > $(IMAGE_NOTE) \
	  || rm -f $(IMAGE_NOTE)

# The whole real-node suite (tests/cluster), with the long scenarios make test leaves out: the operator itself in
# the cluster, a crash mid-rollout, feedback and retraining. Root, the packages above and the mloop image.
cluster-e2e: $(STAMP) node-binaries image
	MLOOP_CLUSTER_IMAGE=1 MLOOP_CLUSTER_E2E=1 $(BIN)/python -m pytest tests/cluster

# Graphviz renders lineage graphs as SVG/PNG; installed from Debian's packages when missing and root.
graphviz:
	@command -v dot >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null); } || \
	  { echo "Graphviz 'dot' is missing: install it (Debian: apt-get install graphviz) for SVG/PNG lineage" >&2; exit 1; }

# The real-node tests first, alone: beside another worker's stack their node's controllers stalled (pods never
# started). Then the rest in TEST_WORKERS pytest-xdist workers, each with a local stack of its own: the suite
# waits on its stack about half the time, so two workers share 2 cores. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(STAMP) binaries graphviz node-if-possible
	@export MLOOP_IMAGE_ARCHIVE=$$(tail -n1 $(IMAGE_NOTE) 2>/dev/null); \
	$(BIN)/python -m pytest tests/cluster; cluster=$$?; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --ignore=tests/cluster tests; rest=$$?; \
	exit $$(( cluster ? cluster : rest ))

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

crds: $(STAMP)
	$(BIN)/python -m mloop.api.crdgen

check-crds: $(STAMP)
	$(BIN)/python -m mloop.api.crdgen --check

# The local stack in the background, the operator in the foreground (Ctrl-C stops the operator;
# `mloop dev down` stops the rest).
dev: $(STAMP) binaries
	$(BIN)/mloop dev up
	eval "$$($(BIN)/mloop dev env)" && MLOOP_EXECUTOR=local MLOOP_LIVENESS_PORT=0 $(BIN)/python -m mloop

# The whole loop on the local stack; leaves it running for kubectl (`.venv/bin/mloop dev down` stops it).
demo: $(STAMP) binaries graphviz
	$(BIN)/mloop demo

# The real-cluster path end to end: needs Docker and kind, and says so when they are missing.
kind-e2e: $(STAMP)
	bash tests/e2e/kind-e2e.sh

image-check: $(STAMP) binaries
	bash tests/e2e/image-check.sh

# Fault injection at full size (more operator kills, a bigger workload); CI runs the smaller size with the tests.
faults: $(STAMP) binaries
	MLOOP_FAULTS_FULL=1 $(BIN)/python -m pytest -s tests/integration/test_faults.py

clean:
	rm -rf $(VENV) build *.egg-info
