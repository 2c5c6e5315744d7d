"""A single-node Apache Kafka broker (KRaft, combined mode) on 127.0.0.1, for tests and development.

Kafka itself is resolved from Maven Central by ``scripts/kafka/pom.xml`` into ``scripts/kafka/lib``
(no Docker). Usage::

    python3 -m streams.broker start --dir .kafka --port 19092   # prints the bootstrap address, returns when ready
    python3 -m streams.broker stop --dir .kafka

or from Python (the test fixture)::

    with LocalBroker(Path("/tmp/k"), port=19092) as broker:
        broker.bootstrap  # "127.0.0.1:19092"
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

KAFKA_DIR = Path(__file__).resolve().parent.parent / "scripts" / "kafka"
LOG4J = """\
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
"""


def resolve_kafka(kafka_dir: Path = KAFKA_DIR) -> Path:
    """Copy Kafka's runtime classpath into ``kafka_dir/lib`` with Maven (once); returns the folder."""
    lib = kafka_dir / "lib"
    if not any(lib.glob("kafka_2.13-*.jar")):
        if shutil.which("mvn") is None:
            raise RuntimeError(
                "Maven (mvn) is needed to resolve Apache Kafka; install it (Debian: apt-get install maven)"
            )
        done = subprocess.run(["mvn", "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
                               f"-DoutputDirectory={lib}"], cwd=kafka_dir, capture_output=True, text=True)
        if done.returncode != 0:  # Maven's own output only then, without its terminal escape codes
            output = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", done.stdout + done.stderr).strip()
            raise RuntimeError(f"Maven could not resolve Apache Kafka (exit {done.returncode}):\n{output[-4000:]}")
    return lib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalBroker:
    """Formats a data directory once, starts ``kafka.Kafka``, waits until it answers metadata requests."""

    def __init__(self, directory: Path, port: int | None = None, controller_port: int | None = None,
                 log_level: str = "warn") -> None:
        self.directory = Path(directory).resolve()
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.log_level = log_level
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.directory / "broker.log"

    def _write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "server.properties"
        config.write_text("\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.directory / 'data'}", "num.partitions=1",
            "offsets.topic.replication.factor=1", "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=1", "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1", "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false", "",
        ]))
        (self.directory / "log4j2.properties").write_text(LOG4J.format(log=self.log_file, level=self.log_level))
        return config

    def _java(self, main: str, *args: str, **popen) -> list[str]:
        lib = resolve_kafka()
        return ["java", "-Xms256m", "-Xmx512m", f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
                "-cp", f"{lib}/*", main, *args]

    def _format(self, config: Path) -> None:
        meta = self.directory / "data" / "meta.properties"
        if meta.exists():
            return
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if cluster_id.startswith("-"):
            cluster_id = "A" + cluster_id[1:]
        subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                                  "--ignore-formatted"), check=True, stdout=subprocess.DEVNULL)

    def start(self, timeout_s: float = 60.0) -> LocalBroker:
        if shutil.which("java") is None:
            raise RuntimeError(
                "Java 17+ is needed to run the Kafka broker (Debian: apt-get install openjdk-17-jre-headless)"
            )
        config = self._write_config()
        self._format(config)
        stdout = open(self.directory / "broker.out", "ab")
        self.process = subprocess.Popen(self._java("kafka.Kafka", str(config)), stdout=stdout, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        (self.directory / "broker.pid").write_text(str(self.process.pid))
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Kafka exited with {self.process.returncode}; see {self.directory}/broker.out")
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
                admin.describe_cluster()
                admin.close()
                return
            except Exception:  # not up yet
                time.sleep(0.5)
        raise TimeoutError(f"Kafka on {self.bootstrap} not ready after {timeout_s:.0f} s; see {self.log_file}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (controlled shutdown), SIGKILL if it does not exit in time."""
        pid = self.process.pid if self.process else _read_pid(self.directory)
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid, self.process):
            time.sleep(0.2)
        if _alive(pid, self.process):
            os.killpg(pid, signal.SIGKILL)
        if self.process:
            self.process.wait()
        (self.directory / "broker.pid").unlink(missing_ok=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _read_pid(directory: Path) -> int | None:
    path = Path(directory) / "broker.pid"
    return int(path.read_text()) if path.exists() else None


def _alive(pid: int, process: subprocess.Popen | None) -> bool:
    if process is not None:
        return process.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m streams.broker", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["start", "stop", "resolve"])
    parser.add_argument("--dir", default=".kafka", help="data and log directory (default .kafka)")
    parser.add_argument("--port", type=int, default=9092, help="client port on 127.0.0.1 (default 9092)")
    parser.add_argument("--controller-port", type=int, default=None, help="KRaft controller port (default: port + 1)")
    args = parser.parse_args(argv)
    try:
        return _act(args)
    except (RuntimeError, TimeoutError) as exc:  # Maven or Java missing or failing, a broker not starting
        print(f"streams.broker {args.action}: {exc}", file=sys.stderr)
        return 1


def _act(args: argparse.Namespace) -> int:
    if args.action == "resolve":
        print(resolve_kafka())
        return 0
    broker = LocalBroker(Path(args.dir), args.port, args.controller_port or args.port + 1)
    if args.action == "stop":
        broker.stop()
        return 0
    broker.start()
    assert broker.process is not None
    print(f"Kafka ready on {broker.bootstrap} (pid {broker.process.pid}, logs {broker.log_file}); "
          f"stop with: python3 -m streams.broker stop --dir {args.dir}", file=sys.stderr)
    print(broker.bootstrap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
