# One image for the operator, the task workloads (ingest, train, package) and the model server.
# Runs as a non-root user; every pod mloop creates is restricted (read-only root, no capabilities).
FROM golang:1.26-bookworm AS versitygw
# The S3 server of the dev overlay, built from its Go module like the local test bed does.
ARG VERSITYGW_VERSION=v1.8.0
WORKDIR /src
RUN go mod init mloop.local/versitygw \
 && go mod edit -require=github.com/versity/versitygw@${VERSITYGW_VERSION} \
 && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/versitygw \
    github.com/versity/versitygw/cmd/versitygw

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends graphviz \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin mloop
WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && rm -rf /root/.cache
COPY --from=versitygw /out/versitygw /usr/local/bin/versitygw
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
USER 10001:10001
EXPOSE 8000 8080 8081
CMD ["python", "-m", "mloop"]
