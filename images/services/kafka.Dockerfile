# Apache Kafka (KRaft, one combined broker + controller) for the `containers` tests: the jars
# devstack resolves from Maven Central (devstack/kafka/pom.xml, .cache/kafka/libs) on Debian's JRE.
# Context: .cache/images/context/kafka (images/build.py stages libs/ and log4j2.properties).
ARG BASE_IMAGE=udb-local/base:bookworm
FROM ${BASE_IMAGE}
# The JRE's postinst links its man page: the directory must exist although man pages are not kept.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install --yes --no-install-recommends openjdk-17-jre-headless \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10002 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin kafka
COPY libs/ /opt/kafka/libs/
COPY log4j2.properties kafka-entry.sh /opt/kafka/
USER 10002:10002
# KAFKA_HOST, KAFKA_PORT and KAFKA_CONTROLLER_PORT say where it listens (host networking: 127.0.0.1).
ENV KAFKA_HOST=127.0.0.1 KAFKA_PORT=9092 KAFKA_CONTROLLER_PORT=9093 KAFKA_DATA=/tmp/kafka-data
CMD ["/bin/sh", "/opt/kafka/kafka-entry.sh"]
