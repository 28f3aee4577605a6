# Entry points: `make test`, `make dev`, `make demo`. Each sets up .venv/ by itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test unit dev demo binaries crds check-crds clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# etcd, kube-apiserver, kube-controller-manager and versitygw, built from Go modules once and cached.
binaries:
	bash operator/mloop/localcluster/build-binaries.sh all

test: $(STAMP) binaries
	$(BIN)/python -m pytest tests

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

demo:
	@echo "The end-to-end demo arrives with the serving issue; today: 'make dev', then kubectl apply -f examples/iris/." >&2
	@exit 2

clean:
	rm -rf $(VENV) build *.egg-info
