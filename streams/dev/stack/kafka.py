"""The local Apache Kafka broker: jars from Maven Central, KRaft single node on loopback.

Jars are resolved by Maven from ``deploy/local/kafka/pom.xml`` into
``<cache>/kafka-<version>/libs`` once; a ``.complete`` marker makes every later
start offline. Storage is formatted on first start (``kafka.tools.StorageTool``),
then the broker runs as ``java ... kafka.Kafka server.properties``.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from connectors.process import ServiceProcess
from schemas import ConfigurationError
from schemas.settings import Settings
from schemas.topics import Topic, topic_name
from streams.dev.stack.tools import REPO_ROOT, is_loopback, require, run_logged

POM = REPO_ROOT / "deploy" / "local" / "kafka" / "pom.xml"
READINESS_TOPIC = "__weir_readiness"
ADMIN = "admin"  # the local broker's superuser (secure stacks only)

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
    host, _ = settings.kafka.host_port
    ctrl = settings.kafka.controller_port
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{ctrl}",
            *(_sasl_lines(settings) if settings.kafka.sasl else _plain_lines(settings)),
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


def _plain_lines(settings: Settings) -> list[str]:
    host, port = settings.kafka.host_port
    ctrl = settings.kafka.controller_port
    return [
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctrl}",
        f"advertised.listeners=PLAINTEXT://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
    ]


def _sasl_lines(settings: Settings) -> list[str]:
    """Both listeners authenticate (the broker and its controller as ``admin``); clients may
    use PLAIN (users below) or SCRAM-SHA-256/512 (users added by :func:`secure`); an
    authorizer with no ACL means no access, so only the ACLs :func:`secure` sets apply."""
    host, port = settings.kafka.host_port
    ctrl = settings.kafka.controller_port
    admin_password = _admin_password(settings)
    users = {ADMIN: admin_password} | principals(settings)
    plain = " ".join(
        [
            "org.apache.kafka.common.security.plain.PlainLoginModule required",
            f'username="{ADMIN}" password="{admin_password}"',
            *(f'user_{name}="{password}"' for name, password in users.items()),
        ]
    )
    return [
        f"listeners=SASL_PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctrl}",
        f"advertised.listeners=SASL_PLAINTEXT://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol=PLAIN",
        "sasl.mechanism.controller.protocol=PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        f"listener.name.controller.plain.sasl.jaas.config={plain};",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={plain};",
        *(
            f"listener.name.sasl_plaintext.{mechanism}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            for mechanism in ("scram-sha-256", "scram-sha-512")
        ),
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{ADMIN}",
        "allow.everyone.if.no.acl.found=false",
    ]


def _admin_password(settings: Settings) -> str:
    """The local broker's own superuser password: made on first secure start, kept in the
    stack's run directory (0600); only ``weir stack`` uses it (ACLs, SCRAM users)."""
    path = process(settings).home / "admin.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


def principals(settings: Settings) -> dict[str, str]:
    """The principals the settings name, with their passwords: the process' own (workers)
    and, when set, the control principal that may publish routes."""
    k = settings.kafka
    found: dict[str, str] = {}
    for name, password in (
        (k.sasl_username, k.sasl_password),
        (k.control_username, k.control_password),
    ):
        if name and password is not None:
            if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
                raise ConfigurationError(
                    f"Kafka principal {name!r}: the local broker takes letters, digits, . _ -"
                )
            found[name] = password.get_secret_value()
    return found


def admin_config(settings: Settings) -> dict[str, Any]:
    """A client config for the local broker's superuser (plain: no credentials at all)."""
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka.bootstrap_servers}
    if settings.kafka.sasl:
        config |= {
            "security.protocol": "sasl_plaintext",
            "sasl.mechanism": "PLAIN",
            "sasl.username": ADMIN,
            "sasl.password": _admin_password(settings),
        }
    return config


def secure(settings: Settings) -> dict[str, str]:
    """On a SASL stack: SCRAM users (SHA-256 and SHA-512) for every principal, and the ACLs
    that say who may do what. Workers read and write weir's topics but may not write the
    models topic; the control principal may, and may create topics. Returns principal →
    role. Idempotent."""
    k = settings.kafka
    if not k.sasl:
        return {}
    client = AdminClient(admin_config(settings) | {"log_level": 3})
    users = principals(settings)
    for mechanism in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512):
        # one alteration per user and request, so one request per mechanism
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(
                name, ScramCredentialInfo(mechanism, 8192), password.encode()
            )
            for name, password in users.items()
        ]
        for fut in client.alter_user_scram_credentials(upserts, request_timeout=15).values():
            fut.result(timeout=20)
    control = k.control_username or k.sasl_username
    roles = {name: ("control" if name == control else "worker") for name in users}
    bindings = [b for name, role in roles.items() for b in acl_bindings(settings, name, role)]
    for fut in client.create_acls(bindings, request_timeout=15).values():
        fut.result(timeout=20)
    return roles


def acl_bindings(settings: Settings, principal: str, role: str) -> list[AclBinding]:
    k = settings.kafka
    user = f"User:{principal}"
    topics = f"{k.topic_prefix}."
    models = topic_name(k, Topic.MODELS)
    groups = sorted({k.topic_prefix, k.client_id, "weir"})

    def allow(kind: ResourceType, name: str, op: AclOperation) -> AclBinding:
        prefixed = ResourcePatternType.PREFIXED
        return AclBinding(kind, name, prefixed, user, "*", op, AclPermissionType.ALLOW)

    ops = [
        AclOperation.READ,
        AclOperation.WRITE,
        AclOperation.DESCRIBE,
        AclOperation.DESCRIBE_CONFIGS,
    ]
    if role == "control":
        ops += [AclOperation.CREATE, AclOperation.ALTER_CONFIGS]
    out = [allow(ResourceType.TOPIC, topics, op) for op in ops]
    out += [
        allow(ResourceType.GROUP, g, op)
        for g in groups
        for op in (AclOperation.READ, AclOperation.DESCRIBE)
    ]
    if role == "worker":  # a deny wins over every allow
        out.append(
            AclBinding(
                ResourceType.TOPIC,
                models,
                ResourcePatternType.LITERAL,
                user,
                "*",
                AclOperation.WRITE,
                AclPermissionType.DENY,
            )
        )
    return out


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
    if settings.kafka.tls:
        raise ConfigurationError(
            f"the local broker speaks PLAINTEXT or SASL_PLAINTEXT on loopback, not "
            f"WEIR_KAFKA__SECURITY_PROTOCOL={settings.kafka.security_protocol}: use "
            "SASL_PLAINTEXT for an authenticated local stack, or a TLS broker of your own "
            "with WEIR_KAFKA__MANAGED=false"
        )
    proc = process(settings)
    running = proc.pid()
    if running is not None:
        return running
    home = proc.home
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "server.properties"
    config.touch(mode=0o600)  # a secure broker's config holds its users' passwords
    config.chmod(0o600)
    config.write_text(_server_properties(settings, data))
    (home / "log4j2.properties").write_text(LOG4J2)
    if not (data / "meta.properties").exists():
        format_storage(settings, config, new_cluster_id())
    return proc.start(_java(settings, "kafka.Kafka", str(config)))


def ready(settings: Settings) -> bool:
    """True once a client can create a topic on the broker."""
    client = AdminClient(
        admin_config(settings)
        | {
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
