#!/bin/sh
# Entry point of the Kafka image: the dev broker's server.properties with container
# listeners, storage formatted on first start, then the broker in the foreground.
#
# KAFKA_INTERNAL_HOST     how containers reach port 9092 (default: this container's address)
# KAFKA_EXTERNAL_ADDRESS  how the host reaches port 9094, host:port (default localhost:9094)
# KAFKA_CLUSTER_ID        KRaft cluster id for a fresh volume (default: a random one)
# KAFKA_AUTO_CREATE_TOPICS  true: a producer's first record creates its topic (default
#                         false, as for the dev broker: a typo should not create one)
# KAFKA_HEAP              JVM heap (default 512m)
set -eu
home=/opt/kafka
data=/var/lib/kafka/data
props=/var/lib/kafka/server.properties
logs=/var/lib/kafka/logs
internal=${KAFKA_INTERNAL_HOST:-$(hostname -i | cut -d' ' -f1)}
external=${KAFKA_EXTERNAL_ADDRESS:-localhost:9094}

sed -e 's|\$controller_port|9093|g' -e 's|\$port|9092|g' -e "s|\\\$data_dir|$data|g" \
    "$home/config/server.properties" > "$props"
# Later keys win when Java reads a properties file: these replace the loopback listeners.
cat >> "$props" <<PROPS

# Container networking (kec-kafka): containers on 9092, the host on 9094.
listeners=PLAINTEXT://0.0.0.0:9092,EXTERNAL://0.0.0.0:9094,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://$internal:9092,EXTERNAL://$external
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
auto.create.topics.enable=${KAFKA_AUTO_CREATE_TOPICS:-false}
PROPS

# G1's regions at 4m, as devkit/broker.py says why: a produce burst is not humongous.
set -- java "-Xmx${KAFKA_HEAP:-512m}" -Xms128m -XX:+UseG1GC -XX:G1HeapRegionSize=4m \
    -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true "-Dkafka.logs.dir=$logs" \
    "-Dlog4j2.configurationFile=$home/config/log4j2-console.properties" \
    -cp "$home/libs/*"
mkdir -p "$logs" && rm -f "$logs/started.log"  # the health check reads this run's
if [ ! -f "$data/meta.properties" ]; then
    id=${KAFKA_CLUSTER_ID:-}
    # 16 random bytes, URL-safe base64; the storage tool reads a leading '-' as an option.
    while [ -z "$id" ] || [ "${id#-}" != "$id" ]; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    "$@" kafka.tools.StorageTool format -t "$id" -c "$props" --standalone
fi
exec "$@" kafka.Kafka "$props"
