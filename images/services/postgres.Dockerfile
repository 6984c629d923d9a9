# PostgreSQL for the `containers` tests, from Debian's packages (as devstack installs it).
ARG BASE_IMAGE=udb-local/base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install --yes --no-install-recommends postgresql \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY postgres-entry.sh /usr/local/bin/postgres-entry.sh
USER postgres
# POSTGRES_HOST, POSTGRES_PORT: where it listens (host networking: 127.0.0.1); the superuser
# POSTGRES_USER / POSTGRES_PASSWORD owns the database POSTGRES_DB.
ENV POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=5432 POSTGRES_USER=udb POSTGRES_PASSWORD=udb POSTGRES_DB=udb \
    PGDATA=/tmp/pg-data
CMD ["/bin/sh", "/usr/local/bin/postgres-entry.sh"]
