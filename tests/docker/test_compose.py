"""docker/compose.yaml checked without a Docker engine: against the Compose Specification and the code.

No engine runs on these machines, so what `docker compose config` and a first `up` would
catch is checked from the files. The file is read as compose reads it: YAML first, then
`${VAR:-default}` interpolation in values, from an empty environment (a trial without
docker/.env). Then: the Compose Specification's JSON schema (compose-spec.json, vendored
unchanged, see compose-spec.NOTICE); the defaults against docker/.env.example; LOOPLINE_*
names against the settings; commands against the CLIs; health checks; the API replicas
behind nginx; the files it mounts; the databases, buckets and secrets its parts share.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import jsonschema
import pytest
import yaml
from readme_doc import resolve

from shared.auth import DeviceRegistry, KeyRegistry, secret_digest
from shared.cli import main as loopline_main
from shared.config import Settings, env_names

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
SCHEMA = Path(__file__).with_name("compose-spec.json")

# `$$`, `${NAME}`, `${NAME<op>ARG}` (op: :- - :? ? :+ +) and `$NAME`, as the Compose Specification has them.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
# Services that are not health-checked, and why that is right for them.
NOT_HEALTH_CHECKED = {
    "worker": "serves no port; a lost worker shows in its job's record (the lease lapses, another worker retries)",
    "trainer-cpu": "a worker on the `train` queue: the same as `worker`",
    "minio-init": "one-shot: makes the buckets and exits; dependants wait for its success",
    "trial-data": "one-shot: writes the trial's datasets and exits; edge-sim waits for its success",
}
SERVE = ["loopline", "serve"]


class Unset(KeyError):
    """A variable without a value or a default: compose would warn and put an empty string."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def value(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        name, op, arg = m["name"] or m["bare"], m["op"], m["arg"]
        given = env.get(name)
        if op in (":-", "-"):
            return given if given or (op == "-" and given is not None) else arg
        if op in (":+", "+"):
            return arg if given or (op == "+" and given is not None) else ""
        if given is None or (op == ":?" and not given):
            raise Unset(f"${{{name}}} is unset and has no default" + (f" ({arg})" if arg else ""))
        return given

    return VARIABLE.sub(value, text)


def interpolated(node: Any, env: Mapping[str, str]) -> Any:  # noqa: ANN401
    """A copy of the parsed file with every string value interpolated (keys are not, as in compose)."""
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(item, env) for item in node]
    return interpolate(node, env) if isinstance(node, str) else node


def strings(node: Any) -> Iterator[str]:  # noqa: ANN401
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file (comments and blank lines skipped; it uses no quotes)."""
    pairs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            pairs[key.strip()] = value.strip()
    return pairs


def environment(service: dict) -> dict[str, str]:
    """A service's `environment`, in either of compose's forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def words(value: str | list | None) -> list[str]:
    """A `command` or `entrypoint` as words (compose splits a string as a shell would)."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(w) for w in value]


def schema_errors(document: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def cli_problems(root: click.Command, argv: list[str]) -> list[str]:
    """What the CLI would refuse in `argv` (its words after the program): names, counts, then each value's type."""
    command, ctx, problems = resolve(root, "loopline", argv)
    if problems:
        return problems
    names = ctx.command_path.split()[1:]
    rest = list(argv)
    for name in names:  # the sub-command names come first: no group option is used before them
        rest.remove(name)
    values, _, _ = command.make_parser(ctx).parse_args(rest)
    for param in command.params:
        if param.name in values:
            try:
                param.type_cast_value(ctx, values[param.name])
            except click.BadParameter as exc:
                problems.append(f"`{ctx.command_path}`: {exc.format_message()}")
    return problems


def has_health_check(service: dict, stage) -> bool:  # noqa: ANN001
    """A health check of its own, or its image's HEALTHCHECK, not disabled."""
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable", False) and check.get("test") != ["NONE"]
    return stage is not None and bool(stage.all("HEALTHCHECK"))


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of a service's bind mounts in short syntax."""
    found = []
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if source.startswith((".", "/")):
            found.append((source, rest.partition(":")[0]))
    return found


@pytest.fixture(scope="module")
def compose(compose_raw: dict) -> dict:
    """The file as compose sees it with no variable set: every default applied."""
    return interpolated(compose_raw, {})


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return env_file(DOCKER / ".env.example")


@pytest.fixture(scope="module")
def replicas(services: dict[str, dict], service_stage: Callable) -> list[str]:
    """The services that run the API: its image's default command, `loopline serve`."""
    return [
        name
        for name, service in services.items()
        if (stage := service_stage(service)) is not None
        and (words(service.get("command")) or stage.exec_form("CMD")) == SERVE
        and not service.get("entrypoint")
    ]


# --- the reading itself ----------------------------------------------------------------------
def test_the_reading_catches_mistakes(compose: dict) -> None:
    """Guards the checks below: interpolation as compose does it, a schema and a CLI check that refuse typos."""
    assert "'training' is not one of" in "".join(cli_problems(loopline_main, ["worker", "--queue", "training"]))
    assert cli_problems(loopline_main, ["vision", "dataset", "synth", "out", "--train", "0"]) == []
    assert interpolate("${A:-x} ${B-y} $$HOME ${C:+set}", {"B": "", "C": "1"}) == "x  $HOME set"
    with pytest.raises(Unset):
        interpolate("${UNSET}", {})
    broken = copy.deepcopy(compose)
    broken["services"]["proxy"]["healthchek"] = broken["services"]["proxy"].pop("healthcheck")
    broken["services"]["postgres"]["restart"] = ["always"]
    broken["volumes"]["pg-data"] = {"drivr": "local"}
    errors = "\n".join(schema_errors(broken))
    assert "services/proxy: 'healthchek' does not match" in errors
    assert "services/postgres/restart: ['always'] is not of type 'string'" in errors
    assert "volumes/pg-data: 'drivr' does not match" in errors


# --- the Compose Specification ----------------------------------------------------------------
def test_compose_file_follows_the_compose_specification(compose: dict) -> None:
    errors = schema_errors(compose)
    assert not errors, "docker/compose.yaml against compose-spec.json:\n" + "\n".join(errors)


def test_every_variable_has_the_env_examples_value_as_its_default(
    compose_raw: dict, env_example: dict[str, str]
) -> None:
    """Without docker/.env the stack runs on the example's values; with a copy of it, on the same ones."""
    defaults: dict[str, set[str]] = {}
    problems = []
    for text in strings(compose_raw):
        for m in VARIABLE.finditer(text):
            if m["escaped"]:
                continue
            name = m["name"] or m["bare"]
            if m["op"] != ":-":
                problems.append(f"{m[0]}: give it a default, `${{{name}:-…}}`, the value of docker/.env.example")
            else:
                defaults.setdefault(name, set()).add(m["arg"])
    for name, found in sorted(defaults.items()):
        if found != {env_example.get(name)}:
            problems.append(
                f"{name}: defaults {sorted(found)} in compose.yaml, {env_example.get(name)!r} in .env.example"
            )
    unused = sorted(set(env_example) - set(defaults))
    if unused:
        problems.append(f"docker/.env.example sets what compose.yaml never reads: {unused}")
    assert not problems, "\n".join(problems)


def test_loopline_variables_are_settings_or_options_of_the_command_run(
    services: dict[str, dict], service_stage: Callable
) -> None:
    """Every LOOPLINE_* name a container gets, or docker/ mentions, is read by the code it reaches."""
    from edge.device_cli import main as edge_main

    settings = {env for name in Settings.model_fields for env in env_names(name)}
    problems = []
    for name, service in services.items():
        env = [k for k in environment(service) if k.startswith("LOOPLINE_")]
        stage = service_stage(service)
        if stage is not None and stage.exec_form("ENTRYPOINT")[:2] == ["loopline", "edge"]:
            command, _, _ = resolve(edge_main, "loopline", ["edge", *words(service.get("command"))], complete=False)
            known = {p.envvar for p in command.params if isinstance(p.envvar, str)}
            problems += [
                f"{name}: {k} is no option's variable of `loopline edge {command.name}`" for k in env if k not in known
            ]
        else:
            problems += [f"{name}: {k} is not a setting (shared/config.py)" for k in env if k not in settings]
    agent = edge_main.get_command(click.Context(edge_main), "edge").get_command(click.Context(edge_main), "agent")
    device_side = {p.envvar for p in agent.params if isinstance(p.envvar, str)}
    for path in sorted(DOCKER.rglob("*")):
        if path.is_file() and path.suffix != ".md":
            named = set(re.findall(r"\bLOOPLINE_[A-Z0-9_]+\b", path.read_text(encoding="utf-8")))
            unknown = sorted(named - settings - device_side)
            if unknown:
                problems.append(f"{path.relative_to(REPO)} names {unknown}: neither settings nor the edge agent's")
    assert not problems, "\n".join(problems)


def test_commands_are_commands_of_the_clis(services: dict[str, dict], service_stage: Callable) -> None:
    """`loopline …` in a service's command (or its shell line) parses as the CLI would parse it."""
    from edge.device_cli import main as edge_main

    checked, problems = 0, []
    for name, service in services.items():
        stage = service_stage(service)
        entrypoint = words(service.get("entrypoint")) or (stage.exec_form("ENTRYPOINT") if stage else [])
        command = words(service.get("command"))
        if not command:
            continue  # the image's own command: tests/docker/test_images.py
        line = entrypoint + command
        if line[:2] == ["sh", "-c"]:
            commands = [shlex.split(part) for part in re.split(r"&&|;|\|\|", " ".join(line[2:]))]
        else:
            commands = [line]
        for argv in commands:
            if argv[:1] != ["loopline"]:
                continue
            root = (
                edge_main
                if stage is not None and stage.exec_form("ENTRYPOINT")[:2] == ["loopline", "edge"]
                else loopline_main
            )
            problems += [f"{name}: {p}" for p in cli_problems(root, argv[1:])]
            checked += 1
    assert checked >= 4, f"only {checked} loopline commands found in compose.yaml"
    assert not problems, "\n".join(problems)


# --- health --------------------------------------------------------------------------------------
def test_every_service_is_health_checked_or_says_why_not(services: dict[str, dict], service_stage: Callable) -> None:
    problems = []
    for name, service in services.items():
        checked = has_health_check(service, service_stage(service))
        if checked and name in NOT_HEALTH_CHECKED:
            problems.append(f"{name} is health-checked: drop it from NOT_HEALTH_CHECKED")
        if not checked and name not in NOT_HEALTH_CHECKED:
            problems.append(
                f"{name}: no health check (its own or its image's); add one, or say why in NOT_HEALTH_CHECKED"
            )
    stale = sorted(set(NOT_HEALTH_CHECKED) - set(services))
    assert not stale, f"NOT_HEALTH_CHECKED names no service: {stale}"
    assert not problems, "\n".join(problems)


def test_what_a_service_waits_for_can_get_there(services: dict[str, dict], service_stage: Callable) -> None:
    """`service_healthy` needs a health check, `service_completed_successfully` a one-shot that is not restarted."""
    problems = []
    for name, service in services.items():
        for target, condition in (service.get("depends_on") or {}).items():
            other = services.get(target)
            if other is None:
                problems.append(f"{name} depends on {target}, which is no service")
                continue
            condition = condition.get("condition", "service_started")
            if condition == "service_healthy" and not has_health_check(other, service_stage(other)):
                problems.append(f"{name} waits for {target} to be healthy, which has no health check: it never is")
            if condition == "service_completed_successfully" and other.get("restart", "no") != "no":
                problems.append(f"{name} waits for {target} to complete, which restarts ({other['restart']})")
            if other.get("profiles") and not set(other["profiles"]) <= set(service.get("profiles", [])):
                problems.append(f"{name} depends on {target}, which only runs with profiles {other['profiles']}")
    assert not problems, "\n".join(problems)


# --- the API behind one port ------------------------------------------------------------------
def test_api_replicas_sit_behind_the_proxy_on_one_published_port(
    services: dict[str, dict], replicas: list[str], service_stage: Callable
) -> None:
    assert len(replicas) >= 2, f"API replicas (services running `loopline serve`): {replicas}"
    first = services[replicas[0]]
    for name in replicas:
        assert not services[name].get("ports"), f"{name} publishes {services[name]['ports']}: only the proxy does"
        assert {k: v for k, v in services[name].items()} == first, f"{name} is configured unlike {replicas[0]}"

    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    proxies = [name for name in published if set(replicas) <= set(services[name].get("depends_on") or {})]
    assert len(proxies) == 1, f"services publishing ports and waiting for every replica: {proxies}"
    (proxy,) = proxies
    assert len(published[proxy]) == 1, f"{proxy} publishes {published[proxy]}: the API has one port"
    host_port, _, container_port = str(published[proxy][0]).rpartition(":")
    waits = services[proxy]["depends_on"]
    assert all(waits[r].get("condition") == "service_healthy" for r in replicas), waits

    conf = next(DOCKER / src for src, dst in bind_mounts(services[proxy]) if dst.startswith("/etc/nginx/"))
    text = conf.read_text(encoding="utf-8")
    assert re.findall(r"^\s*listen\s+(\d+)\s*;", text, re.M) == [container_port], f"{conf.name} listens elsewhere"
    api_port = service_stage(first).env().get("LOOPLINE_PORT", str(Settings.model_fields["port"].default))
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", text, re.M)
    assert sorted(servers) == sorted((r, api_port) for r in replicas), (
        f"{conf.name}'s upstream servers {servers}; the replicas listen on {[f'{r}:{api_port}' for r in replicas]}"
    )
    assert host_port.split(":")[-1].isdigit()


def test_nginx_upstreams_and_proxied_names_exist(services: dict[str, dict]) -> None:
    """Every host nginx sends to is a compose service, every proxy_pass an upstream it defines."""
    confs = [DOCKER / src for s in services.values() for src, dst in bind_mounts(s) if dst.startswith("/etc/nginx/")]
    assert confs, "no nginx configuration is mounted"
    for conf in confs:
        text = conf.read_text(encoding="utf-8")
        upstreams = set(re.findall(r"^\s*upstream\s+([\w-]+)\s*\{", text, re.M))
        hosts = set(re.findall(r"^\s*server\s+([\w.-]+):\d+", text, re.M))
        passed = set(re.findall(r"proxy_pass\s+https?://([\w.-]+)", text))
        assert upstreams and passed, f"{conf.name}: no upstream or proxy_pass found"
        assert hosts <= set(services), (
            f"{conf.name} sends to hosts that are no service: {sorted(hosts - set(services))}"
        )
        assert passed <= upstreams | set(services), f"{conf.name} proxies to undefined {sorted(passed - upstreams)}"


def test_urls_name_services_and_routes_of_the_api(services: dict[str, dict], replicas: list[str], has_route) -> None:  # noqa: ANN001
    """Hosts in URLs the containers are given are services; a URL to the API names a route it has."""
    problems = []
    for name, service in services.items():
        values = list(environment(service).values()) + words(service.get("command"))
        for value in values:
            for url in re.findall(r"\b[a-z][a-z0-9+]*://[^\s,]+", value):
                parts = urlsplit(url)
                if parts.scheme == "s3":
                    continue  # a bucket, not a host: test_buckets_in_use_are_made
                if parts.hostname and parts.hostname not in services:
                    problems.append(f"{name}: {url} names host {parts.hostname}, which is no service")
                proxied = parts.hostname == "proxy" or parts.hostname in replicas
                if proxied and parts.path.strip("/") and not has_route("POST", parts.path):
                    problems.append(f"{name}: {url}: the API has no POST {parts.path}")
    assert not problems, "\n".join(problems)


# --- what it mounts and builds ------------------------------------------------------------------
def test_mounted_files_build_contexts_and_volumes_exist(compose: dict, services: dict[str, dict]) -> None:
    problems = []
    for name, service in services.items():
        for source, target in bind_mounts(service):
            path = (DOCKER / source).resolve()
            if not path.exists():
                problems.append(f"{name} mounts {source}, which is not in the repository ({path})")
            elif target.startswith("/docker-entrypoint-initdb.d/") and not os.access(path, os.X_OK):
                problems.append(f"{name}: {source} is not executable; the postgres image would source it instead")
        build = service.get("build")
        if build:
            context = DOCKER / build["context"]
            if not (context / build.get("dockerfile", "Dockerfile")).is_file():
                problems.append(f"{name}: no {build.get('dockerfile')} in its build context {context}")
    declared = set(compose.get("volumes") or {})
    used = {
        v.partition(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith((".", "/"))
    }
    if used - declared:
        problems.append(f"named volumes used but not declared: {sorted(used - declared)}")
    if declared - used:
        problems.append(f"named volumes declared but not used: {sorted(declared - used)}")
    assert not problems, "\n".join(problems)


# --- what the parts share ------------------------------------------------------------------------
def _created_databases(services: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(role, password, database) the postgres service's init script makes, with its environment's values."""
    (postgres,) = [s for s in services.values() if any("initdb.d" in dst for _, dst in bind_mounts(s))]
    (script,) = [DOCKER / src for src, dst in bind_mounts(postgres) if "initdb.d" in dst]
    env = environment(postgres)
    made = []
    for role, password, database in re.findall(
        r'^create_database\s+"([^"]+)"\s+"([^"]+)"\s+"([^"]+)"', script.read_text(), re.M
    ):
        made.append((interpolate(role, env), interpolate(password, env), interpolate(database, env)))
    assert len(made) >= 3, f"{script.name} makes {made}"
    return made


def test_database_urls_match_the_databases_postgres_makes(services: dict[str, dict]) -> None:
    made = _created_databases(services)
    used = set()
    for name, service in services.items():
        env = environment(service)
        for value in [*env.values(), *words(service.get("command"))]:
            for url in re.findall(r"postgres(?:ql)?(?:\+\w+)?://[^\s,]+", value):
                parts = urlsplit(url)
                found = (parts.username, parts.password, parts.path.lstrip("/"))
                assert found in made, f"{name}: {url} is none of the role/password/database made: {made}"
                used.add(found)
        if "POSTGRE_NAME" in env:  # Label Studio's own settings
            found = (env["POSTGRE_USER"], env["POSTGRE_PASSWORD"], env["POSTGRE_NAME"])
            assert found in made, f"{name}: POSTGRE_* {found} is none of the databases made: {made}"
            used.add(found)
    assert used == set(made), f"databases made but used by no service: {set(made) - used}"


def test_buckets_in_use_are_made(services: dict[str, dict]) -> None:
    (script,) = [DOCKER / src for s in services.values() for src, dst in bind_mounts(s) if dst.endswith("buckets.sh")]
    (loop,) = re.findall(r"^for bucket in ([\w -]+); do", script.read_text(), re.M)
    made = set(loop.split())
    used = {
        urlsplit(url).hostname
        for s in services.values()
        for value in [*environment(s).values(), *words(s.get("command"))]
        for url in re.findall(r"\bs3://[\w.-]+", value)
    }
    assert used and used <= made, f"buckets used {sorted(used)}, made by {script.name}: {sorted(made)}"


def test_trial_keys_and_device_token_are_the_ones_registered(
    services: dict[str, dict], env_example: dict[str, str]
) -> None:
    """The simulated camera's id, fleet and token are in devices.yaml; the admin key shown is api_keys.yaml's."""
    config = DOCKER / "config"
    devices = DeviceRegistry.from_file(config / "devices.yaml")
    sims = [s for s in services.values() if "LOOPLINE_DEVICE_TOKEN" in environment(s)]
    assert sims, "no service runs a device agent"
    for service in sims:
        command = words(service["command"])
        option = {command[i]: command[i + 1] for i in range(len(command) - 1) if command[i].startswith("--")}
        device = devices.authenticate(environment(service)["LOOPLINE_DEVICE_TOKEN"])
        assert device is not None, "its token's sha256 is not in docker/config/devices.yaml"
        assert (device.id, device.fleet) == (option["--device-id"], option["--fleet"]), device
    assert environment(sims[0])["LOOPLINE_DEVICE_TOKEN"] == env_example["EDGE_DEVICE_TOKEN"]

    keys_file = config / "api_keys.yaml"
    (shown,) = re.findall(r"the admin's key is `([^`]+)`", keys_file.read_text(encoding="utf-8"))
    user = KeyRegistry.from_file(keys_file).authenticate(shown)
    assert user is not None and user.admin, f"{keys_file.name}: the key its comment shows is not its admin's"
    assert secret_digest(shown) in keys_file.read_text(encoding="utf-8")
    assert yaml.safe_load(keys_file.read_text(encoding="utf-8"))["users"], keys_file
