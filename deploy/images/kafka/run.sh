#!/bin/bash
# Writes server.properties from the environment, as the apache/kafka image
# does (KAFKA_FOO_BAR → foo.bar, __ → _, ___ → -), formats the KRaft storage
# with CLUSTER_ID on first start, then runs the broker in the foreground.
set -euo pipefail
CONFIG=/tmp/server.properties
DATA=/var/lib/kafka/data
{
  echo "log.dirs=$DATA"
  env | grep '^KAFKA_' | grep -v -E '^KAFKA_(HEAP_OPTS)=' | while IFS='=' read -r name value; do
    key=$(echo "${name#KAFKA_}" | tr '[:upper:]' '[:lower:]' \
      | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
    echo "$key=$value"
  done
} >"$CONFIG"
# shellcheck disable=SC2206  # KAFKA_HEAP_OPTS holds several options
JAVA=(java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m} -XX:+UseG1GC -Djava.awt.headless=true
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -cp '/opt/kafka/libs/*')
if [ ! -f "$DATA/meta.properties" ]; then
  "${JAVA[@]}" kafka.tools.StorageTool format "--cluster-id=${CLUSTER_ID:?CLUSTER_ID is required}" -c "$CONFIG"
fi
exec "${JAVA[@]}" kafka.Kafka "$CONFIG"
