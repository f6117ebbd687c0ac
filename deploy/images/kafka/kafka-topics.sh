#!/bin/bash
# kafka-topics.sh as the distribution has it: the TopicCommand of kafka-tools.
exec java -Xmx256m -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
  -cp '/opt/kafka/libs/*' org.apache.kafka.tools.TopicCommand "$@"
