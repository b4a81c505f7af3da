"""The deployment files of docs/deployment.md hold together with the code.

They cannot be run here (no systemd, Docker or Kubernetes), so each is read
and checked: every ``tickerq`` command in them is one the CLI accepts, the
probes ask for paths the metrics port serves, and every stop timeout is longer
than the worker's grace period plus the stop margin, so no orchestrator kills a
worker while its jobs still finish.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from tickerq import EngineOptions
from tickerq.cli import cli

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "snippets" / "deploy"
SNIPPETS = DEPLOY.parent
PROBES = {"/healthz", "/readyz"}  # what tickerq run --metrics-port serves besides /metrics


def parse(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``tickerq ARGS`` as the CLI would (without running it): (command, params)."""
    assert args[0] == "tickerq", args
    cmd: click.Command = cli
    name, ctx, rest = "tickerq", None, args[1:]
    while True:
        ctx = cmd.make_context(name, list(rest), parent=ctx)
        if not isinstance(cmd, click.Group):
            return cmd.name or name, ctx.params
        found, sub, rest = cmd.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        assert sub is not None and found is not None
        cmd, name = sub, found


def worker_stop_budget() -> float:
    """How long jobs.py's worker may take to stop after SIGTERM (grace + margin)."""
    source = (SNIPPETS / "jobs.py").read_text()
    grace = float(re.search(r"EngineOptions\(grace_period=(\d+)\)", source).group(1))  # type: ignore[union-attr]
    return grace + EngineOptions().stop_margin


def test_parse_refuses_a_bad_command() -> None:
    with pytest.raises(click.UsageError):
        parse(["tickerq", "run", "jobs:app", "--metrics-port", "nine"])


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "tickerq-worker.service").read_text())
    service = unit["Service"]
    start = shlex.split(service["ExecStart"])
    assert start[0].endswith("/tickerq")
    command, params = parse(["tickerq", *start[1:]])
    assert command == "run" and params["target"] == "jobs:app" and params["metrics_port"] == 9108
    pre = shlex.split(service["ExecStartPre"])
    assert parse(["tickerq", *pre[1:]])[0] == "upgrade"
    env = dict(line.split("=", 1) for line in [service["Environment"]])
    assert env["TICKERQ_LOG_FORMAT"] == "json"
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > worker_stop_budget()


def _dockerfile() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value.strip()  # the last of each instruction
    return out


def test_dockerfile() -> None:
    docker = _dockerfile()
    command, params = parse(json.loads(docker["CMD"]))
    assert command == "run" and params["metrics_host"] == "0.0.0.0"
    assert docker["EXPOSE"] == str(params["metrics_port"])
    assert docker["STOPSIGNAL"] == "SIGTERM"
    # the image has the extras its stores (here and in compose.yaml) and --metrics-port need
    (extras,) = re.findall(
        r"pip install --no-cache-dir 'tickerq\[([a-z,]+)\]'", _text("Dockerfile")
    )
    assert {"sqlite", "postgres", "prometheus"} <= set(extras.split(","))
    assert docker["ENV"].startswith("TICKERQ_STORE=sqlite:")
    assert "postgresql://" in _text("compose.yaml") and "build: ." in _text("compose.yaml")


def _text(name: str) -> str:
    return (DEPLOY / name).read_text()


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, text
    return float(match.group(1))


def test_compose(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    worker = compose["services"]["worker"]
    assert worker["environment"]["TICKERQ_STORE"].startswith("postgresql://")
    # the image's command (the Dockerfile's CMD) reads the service's variables
    for name, value in worker["environment"].items():
        monkeypatch.setenv(name, str(value))
    _, params = parse(json.loads(_dockerfile()["CMD"]))
    assert params["store_url"] == worker["environment"]["TICKERQ_STORE"]
    assert params["concurrency"] == worker["environment"]["TICKERQ_CONCURRENCY"] >= 1
    assert _seconds(worker["stop_grace_period"]) > worker_stop_budget()
    probe = " ".join(worker["healthcheck"]["test"])
    assert "http://127.0.0.1:9108/readyz" in probe


def test_kubernetes_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    (deployment,) = yaml.safe_load_all((DEPLOY / "k8s-worker.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > worker_stop_budget()
    (migrate,) = pod["initContainers"]
    assert parse(migrate["command"])[0] == "upgrade"
    (worker,) = pod["containers"]
    pod_name = "jobs-worker-7c9f5d-x2k4q"
    env = {e["name"]: e for e in worker["env"]}
    assert env["TICKERQ_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    monkeypatch.setenv("TICKERQ_NODE_ID", pod_name)
    monkeypatch.setenv("TICKERQ_CONCURRENCY", env["TICKERQ_CONCURRENCY"]["value"])
    command, params = parse(worker["command"])
    assert params["node_id"] == pod_name and params["concurrency"] == 8
    assert command == "run" and params["metrics_host"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports["metrics"] == params["metrics_port"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = worker[probe]["httpGet"]
        assert get["port"] == "metrics" and get["path"] in PROBES, probe
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # The readiness probe waits longer than the store read the check allows.
    from tickerq.health import STORE_TIMEOUT

    assert worker["readinessProbe"]["timeoutSeconds"] > STORE_TIMEOUT


def test_the_metrics_port_serves_the_probed_paths() -> None:
    """The paths the files probe are the ones tickerq.monitor answers."""
    source = (Path(__file__).resolve().parents[2] / "src" / "tickerq" / "monitor.py").read_text()
    for path in PROBES:
        assert f'"{path}"' in source, path


def test_every_variable_in_the_files_is_one_tickerq_reads() -> None:
    """A misspelt TICKERQ_* variable would be ignored without a word."""
    read: set[str] = set()

    def walk(command: click.Command) -> None:
        for param in command.params:
            if isinstance(param.envvar, str):
                read.add(param.envvar)
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                walk(sub)

    walk(cli)
    assert {"TICKERQ_STORE", "TICKERQ_NODE_ID", "TICKERQ_CONCURRENCY"} <= read
    for path in sorted(DEPLOY.iterdir()):
        for name in re.findall(r"TICKERQ_[A-Z_]+", path.read_text()):
            assert name in read, f"{path.name}: tickerq reads no {name}"
