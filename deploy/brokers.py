"""A real Kafka broker for development and tests: from the environment, a container, or local Java.

The order (see deploy/README.md):

1. ``RUNSTREAM_KAFKA_BOOTSTRAP`` or ``KAFKA_BOOTSTRAP_SERVERS`` set: use that broker.
2. A Docker engine answers: a Kafka container through testcontainers.
3. Otherwise: a single-node Apache Kafka in KRaft mode, run with the machine's Java from
   the official ``org.apache.kafka:kafka_2.13`` artifacts, which Maven resolves from Maven
   Central into a cache folder. Its log lives on disk under the data directory, so a
   second start on the same directory keeps every event.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

log = logging.getLogger(__name__)

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
BOOTSTRAP_ENV_VARS = ("RUNSTREAM_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP_SERVERS")

BrokerMode = Literal["auto", "external", "container", "local"]


class BrokerError(RuntimeError):
    """The broker could not be resolved, started or reached."""


class Broker(Protocol):
    """A running broker: where to reach it, and how to stop it if we started it."""

    kind: str
    bootstrap: str

    def stop(self) -> None: ...


@dataclass
class ExternalBroker:
    """A broker someone else runs; stopping it is not ours to do."""

    bootstrap: str
    kind: str = "external"

    def stop(self) -> None:
        return None


@dataclass
class ContainerBroker:
    """A Kafka container started through testcontainers."""

    container: object
    bootstrap: str
    kind: str = "container"

    def stop(self) -> None:
        stop = getattr(self.container, "stop", None)
        if stop is not None:
            stop()


def cache_dir() -> Path:
    """Where Maven's repository and the resolved class path are kept between runs."""
    env = os.environ.get("RUNSTREAM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "runstream"


def kafka_version() -> str:
    """The Kafka version the pom pins."""
    text = POM.read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>")]


def resolve_kafka_classpath(*, quiet: bool = True) -> str:
    """Resolve the broker's jars with Maven into the cache; return the class path.

    The first call downloads about 60 MB from Maven Central; later ones read a file.
    """
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    cp_file = cache / f"kafka-{kafka_version()}.classpath"
    if cp_file.exists():
        classpath = cp_file.read_text().strip()
        if classpath and all(Path(p).exists() for p in classpath.split(os.pathsep)):
            return classpath
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is not on PATH; it resolves the Kafka broker's jars")
    if shutil.which("java") is None:
        raise BrokerError("Java is not on PATH; the local Kafka broker needs Java 17 or newer")
    tmp = cp_file.with_suffix(".tmp")
    cmd = [
        mvn,
        "-B",
        *(["-q"] if quiet else []),
        "-f",
        str(POM),
        "dependency:build-classpath",
        f"-Dmdep.outputFile={tmp}",
        f"-Dmaven.repo.local={cache / 'm2'}",
    ]
    log.info("resolving Kafka %s with Maven: %s", kafka_version(), " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not tmp.exists():
        raise BrokerError(
            f"Maven could not resolve Kafka (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    tmp.replace(cp_file)  # atomic: a half-written class path is never read
    return cp_file.read_text().strip()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_metadata(bootstrap: str, timeout_s: float, alive: object = None) -> float:
    """Block until a metadata request to ``bootstrap`` succeeds; return the seconds it took.

    ``alive`` is an optional callable returning False when the broker process died, so a
    broker that failed to start is reported at once instead of at the timeout.
    """
    from confluent_kafka.admin import AdminClient

    started = time.monotonic()
    quiet = logging.getLogger("runstream.librdkafka")
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": quiet})
    last_error: Exception | None = None
    while time.monotonic() - started < timeout_s:
        if callable(alive) and not alive():
            raise BrokerError("the broker process exited during start-up")
        try:
            metadata = admin.list_topics(timeout=2)
            if metadata.brokers:
                return time.monotonic() - started
        except Exception as exc:  # noqa: BLE001 - any failure here means "not ready yet"
            last_error = exc
        time.sleep(0.1)
    raise BrokerError(f"no metadata from {bootstrap} after {timeout_s:.0f}s: {last_error}")


_PR_SET_PDEATHSIG = 1


def _die_with(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when its parent dies, even by SIGKILL (Linux
    ``prctl(PR_SET_PDEATHSIG)``), so a killed ``runstream up`` or test session leaves no
    broker JVM behind. The signal follows the thread that started the child: start brokers
    from a thread that lives as long as they should (the main thread, as the CLI and tests do)."""

    def arm() -> None:
        if not sys.platform.startswith("linux"):
            return
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before the line above
            os._exit(1)

    return arm


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64, never starting with "-" (the
    storage tool would read it as an option; Kafka's own Uuid.randomUuid() skips those too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class LocalKafka:
    """A single-node Apache Kafka in KRaft mode (broker and controller in one JVM)."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int | None = None
    heap: str = "512m"
    kind: str = "local"
    bootstrap: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_in_s: float = 0.0

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def broker_log(self) -> Path:
        return self.data_dir / "broker.log"

    def start(self, timeout_s: float = 90.0) -> LocalKafka:
        """Format storage on first use, start the JVM, and wait until it answers metadata."""
        classpath = resolve_kafka_classpath()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = self.port or free_port(self.host)
        controller_port = free_port(self.host)
        self.bootstrap = f"{self.host}:{port}"
        config = self.data_dir / "server.properties"
        config.write_text(self._server_properties(port, controller_port))
        if not (self.log_dir / "meta.properties").exists():
            self._format(classpath, config)
        t0 = time.monotonic()
        with self.broker_log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    "java",
                    f"-Xms{self.heap}",
                    f"-Xmx{self.heap}",
                    "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20",
                    # Two cores: keep the JVM from sizing its thread pools for a big box.
                    "-XX:ActiveProcessorCount=2",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(config),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own process group: a Ctrl-C in the terminal reaches us, and we stop it
                # in order (SIGTERM, then wait), instead of both dying at once...
                start_new_session=True,
                # ...and if we are killed outright, it is stopped all the same.
                preexec_fn=_die_with(os.getpid()),
            )
        try:
            wait_for_metadata(self.bootstrap, timeout_s, alive=self._alive)
        except BrokerError as exc:
            self.stop()
            raise BrokerError(f"{exc}\n--- {self.broker_log} (tail) ---\n{self._log_tail()}") from None
        self.started_in_s = time.monotonic() - t0
        log.info("Kafka %s ready at %s in %.1fs", kafka_version(), self.bootstrap, self.started_in_s)
        return self

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _format(self, classpath: str, config: Path) -> None:
        cluster_id = new_cluster_id()
        proc = subprocess.run(
            [
                "java",
                "-Xmx256m",
                f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed:\n{proc.stdout}{proc.stderr}")

    def _server_properties(self, port: int, controller_port: int) -> str:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{port},CONTROLLER://{self.host}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dir),
            # One node: internal topics cannot have more than one replica.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created by runstream with explicit settings, never by accident.
            "auto.create.topics.enable": "false",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "message.max.bytes": str(8 * 1024 * 1024),
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.broker_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the JVM (a clean shutdown flushes the log), SIGKILL it if it hangs."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def bootstrap_from_env() -> str | None:
    """The bootstrap address given in the environment, if any."""
    for name in BOOTSTRAP_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def docker_engine_answers(timeout_s: float = 3.0) -> tuple[bool, str]:
    """Whether a Docker engine answers a ping, and why not when it does not."""
    try:
        import docker  # shipped with testcontainers
    except ImportError:
        return False, "the docker package is not installed (pip install 'runstream[test]')"
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host[len("unix://") :]).exists():
        return False, f"no Docker engine: {host[len('unix://'):]} does not exist"
    client = None
    try:
        client = docker.from_env(timeout=int(timeout_s))
        client.ping()
        return True, "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        return False, f"no Docker engine answers: {exc.__class__.__name__}: {exc}"
    finally:
        if client is not None:
            client.close()


def start_container_broker() -> ContainerBroker:
    """Start Kafka (KRaft) in a container through testcontainers."""
    from testcontainers.kafka import KafkaContainer

    container = KafkaContainer().with_kraft()
    container.start()
    return ContainerBroker(container=container, bootstrap=container.get_bootstrap_server())


def provision_broker(
    data_dir: Path, *, mode: BrokerMode = "auto", port: int | None = None
) -> Broker:
    """Find or start a broker in the documented order, or exactly the ``mode`` asked for."""
    if mode in ("auto", "external"):
        bootstrap = bootstrap_from_env()
        if bootstrap:
            wait_for_metadata(bootstrap, timeout_s=30)
            return ExternalBroker(bootstrap=bootstrap)
        if mode == "external":
            raise BrokerError(f"mode 'external' needs one of {', '.join(BOOTSTRAP_ENV_VARS)}")
    if mode in ("auto", "container"):
        answers, why = docker_engine_answers()
        if answers:
            return start_container_broker()
        if mode == "container":
            raise BrokerError(why)
        log.info("no container broker: %s; starting a local Kafka with Java", why)
    return LocalKafka(data_dir=data_dir, port=port).start()
