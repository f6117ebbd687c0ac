"""The local Apache Kafka broker: jars from Maven Central, KRaft single node on loopback.

Jars are resolved by Maven from ``deploy/local/kafka/pom.xml`` into
``<cache>/kafka-<version>/libs`` once; a ``.complete`` marker makes every later
start offline. Storage is formatted on first start (``kafka.tools.StorageTool``),
then the broker runs as ``java ... kafka.Kafka server.properties``.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.process import ServiceProcess
from schemas import ConfigurationError
from schemas.settings import Settings
from streams.dev.stack.tools import REPO_ROOT, is_loopback, require, run_logged

POM = REPO_ROOT / "deploy" / "local" / "kafka" / "pom.xml"
READINESS_TOPIC = "__weir_readiness"

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


def process(settings: Settings) -> ServiceProcess:
    return ServiceProcess("kafka", settings.stack.run_dir)


def libs_dir(settings: Settings) -> Path:
    return settings.stack.cache_dir / f"kafka-{settings.kafka.version}" / "libs"


def ensure_jars(settings: Settings) -> bool:
    """Fetch the broker jars unless cached; returns True when it downloaded."""
    libs = libs_dir(settings)
    marker = libs / ".complete"
    if marker.exists():
        return False
    mvn = require("mvn", "fetch the Kafka broker jars from Maven Central")
    if not POM.exists():
        raise ConfigurationError(f"{POM} is missing: run weir from its source checkout")
    libs.mkdir(parents=True, exist_ok=True)
    run_logged(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-Dkafka.version={settings.kafka.version}",
            f"-DoutputDirectory={libs}",
        ],
        log=settings.stack.cache_dir / "fetch-kafka.log",
        what=f"fetching Kafka {settings.kafka.version} jars with Maven",
    )
    marker.write_text(settings.kafka.version)
    return True


def _server_properties(settings: Settings, data_dir: Path) -> str:
    host, port = settings.kafka.host_port
    ctrl = settings.kafka.controller_port
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{ctrl}",
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctrl}",
            f"advertised.listeners=PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.cleaner.backoff.ms=1000",
            f"message.max.bytes={settings.kafka.message_max_bytes}",
            "",
        ]
    )


def _java(settings: Settings, main_class: str, *args: str) -> list[str]:
    java = require("java", "run the local Kafka broker")
    home = process(settings).home
    return [
        java,
        f"-Xmx{settings.kafka.heap}",
        f"-Xms{settings.kafka.heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
        "-cp",
        f"{libs_dir(settings)}/*",
        main_class,
        *args,
    ]


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 (it may start with "-")."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def format_storage(settings: Settings, config: Path, cluster_id: str) -> None:
    """Format the broker's log directory for KRaft (first start only)."""
    run_logged(
        # "--cluster-id=…" keeps an id that starts with "-" from being read as an option
        _java(
            settings,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(config),
        ),
        log=process(settings).log_file,
        what="formatting Kafka storage",
    )


def start(settings: Settings) -> int:
    """Write config, format storage on first start, and start the broker; returns its PID."""
    host, _ = settings.kafka.host_port
    if not is_loopback(host):
        raise ConfigurationError(
            f"the local broker binds to loopback only, but WEIR_KAFKA__BOOTSTRAP_SERVERS is "
            f"{settings.kafka.bootstrap_servers}; set WEIR_KAFKA__MANAGED=false to use it as is"
        )
    proc = process(settings)
    running = proc.pid()
    if running is not None:
        return running
    home = proc.home
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "server.properties"
    config.write_text(_server_properties(settings, data))
    (home / "log4j2.properties").write_text(LOG4J2)
    if not (data / "meta.properties").exists():
        format_storage(settings, config, new_cluster_id())
    return proc.start(_java(settings, "kafka.Kafka", str(config)))


def ready(settings: Settings) -> bool:
    """True once a client can create a topic on the broker."""
    client = AdminClient(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "socket.timeout.ms": 2000,
            "log_level": 2,  # connection refused is expected while polling
        }
    )
    fut = client.create_topics(
        [NewTopic(READINESS_TOPIC, num_partitions=1, replication_factor=1)], request_timeout=3
    )[READINESS_TOPIC]
    try:
        fut.result(timeout=5)
    except KafkaException as exc:
        return bool(exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS)
    except Exception:
        return False
    return True
