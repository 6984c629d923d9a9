#!/bin/sh
# Kafka in the container: the same server settings as devstack/services/kafka.py, storage formatted on
# first start (a fresh container is a fresh cluster).
set -eu
config=/tmp/server.properties
cat >"$config" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@${KAFKA_HOST}:${KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://${KAFKA_HOST}:${KAFKA_PORT},CONTROLLER://${KAFKA_HOST}:${KAFKA_CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://${KAFKA_HOST}:${KAFKA_PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=${KAFKA_DATA}
auto.create.topics.enable=true
num.partitions=4
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
java_opts="-XX:+UseG1GC -Djava.awt.headless=true -Dlog4j2.shutdownHookEnabled=false -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties"
if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
    cluster_id="$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
    java -Xmx256m $java_opts -cp '/opt/kafka/libs/*' kafka.tools.StorageTool format -t "$cluster_id" -c "$config"
fi
exec java -Xmx512m $java_opts -cp '/opt/kafka/libs/*' kafka.Kafka "$config"
