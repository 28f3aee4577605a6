# One image for the operator, the task workloads (ingest, train, package) and the model server.
# Runs as a non-root user; every pod mloop creates is restricted (read-only root, no capabilities).
# Where no registry is reachable, `make image` passes local stand-ins for both (build-images.sh):
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG VERSITYGW_IMAGE=versitygw-source
# Wheels for an offline pip (with --build-arg PIP_NO_INDEX=1): an image holding /wheels, built on the host.
ARG WHEELS_IMAGE=no-wheels
FROM golang:1.26-bookworm AS versitygw-source
# The S3 server of the dev overlay, built from its Go module like the local test bed does.
ARG VERSITYGW_VERSION=v1.8.0
WORKDIR /src
RUN go mod init mloop.local/versitygw \
 && go mod edit -require=github.com/versity/versitygw@${VERSITYGW_VERSION} \
 && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/versitygw \
    github.com/versity/versitygw/cmd/versitygw

FROM ${VERSITYGW_IMAGE} AS versitygw

FROM ${PYTHON_IMAGE} AS no-wheels
RUN mkdir -p /wheels

FROM ${WHEELS_IMAGE} AS wheels

# Everything but mloop's own code: build-images.sh builds this stage alone and adds the code layer itself.
FROM ${PYTHON_IMAGE} AS deps
RUN apt-get update \
 && apt-get install -y --no-install-recommends graphviz \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin mloop
WORKDIR /app
COPY pyproject.toml ./
ARG PIP_NO_INDEX
# Dependencies first, in a layer that only pyproject.toml invalidates (a stub package stands in for the code).
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    mkdir -p operator/mloop && touch operator/mloop/__init__.py README.md \
 && pip install --no-cache-dir --find-links /wheels . && pip uninstall -y mloop && rm -rf operator README.md /root/.cache
COPY --from=versitygw /out/versitygw /usr/local/bin/versitygw
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
EXPOSE 8000 8080 8081

FROM deps
# The code last, in one step: few layers after it (each is a full copy with podman's vfs storage). A bind mount's
# content is not part of the layer cache's key, so the source's hash is: without it podman reused stale code.
ARG MLOOP_SOURCE=unknown
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels --mount=type=bind,target=/src \
    echo "mloop source ${MLOOP_SOURCE}" \
 && mkdir /tmp/src && cp -r /src/pyproject.toml /src/README.md /src/operator /tmp/src/ \
 && pip install --no-cache-dir --find-links /wheels --no-deps /tmp/src && rm -rf /tmp/src /root/.cache
USER 10001:10001
CMD ["python", "-m", "mloop"]
