# MinIO for the `containers` tests: the binary devstack builds with `go install` at its pinned
# version (devstack/services.py MINIO_VERSION, .cache/bin/minio), statically linked.
# Context: .cache/images/context/minio (images/build.py stages the binary).
ARG BASE_IMAGE=udb-local/base:bookworm
FROM ${BASE_IMAGE}
COPY minio /usr/local/bin/minio
USER 10003:10003
# MINIO_HOST, MINIO_PORT, MINIO_CONSOLE_PORT: where it listens (host networking: 127.0.0.1).
ENV MINIO_HOST=127.0.0.1 MINIO_PORT=9000 MINIO_CONSOLE_PORT=9001 MINIO_UPDATE=off HOME=/tmp
CMD ["/bin/sh", "-c", "exec minio server /tmp/minio-data --address ${MINIO_HOST}:${MINIO_PORT} --console-address ${MINIO_HOST}:${MINIO_CONSOLE_PORT}"]
