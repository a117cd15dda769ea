"""The local Label Studio loopline manages: `loopline labelstudio up|status|down`, for real.

The CLI runs in a subprocess, as a person runs it (the server outlives the command that
started it), on a home seeded with the migrated template (tests/helpers/labelstudio.py), so a
start takes seconds. Failures that never reach Label Studio (busy port, a program that dies
at once, a stale state file) use a stand-in executable and run without it installed.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from labelstudio import LabelStudioServer, executable, free_port, seed

from shared.config import Settings
from vision.labeling.local_server import (
    LOCAL_USER,
    LabelStudioError,
    LocalLabelStudio,
    _alive,
    connection,
    port_in_use,
    whoami,
)

STRAY = {"USERNAME": "intruder@example.com", "PASSWORD": "stray-password", "HOST": "evil.example", "PORT": "1"}


def loopline(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "labelstudio", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_env(home: Path, port: int, exe: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env.update(LOOPLINE_HOME=str(home), LOOPLINE_LABEL_STUDIO_PORT=str(port), LOOPLINE_LABEL_STUDIO_BIN=exe, **extra)
    return env


def get(url: str, token: str) -> object:
    req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def fake_executable(folder: Path, body: str) -> str:
    """A stand-in `label-studio`: a shell script (it leaves `ran` behind when it runs)."""
    path = folder / "label-studio"
    path.write_text(f"#!/bin/sh\ntouch '{folder}/ran'\n{body}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.slow
def test_up_status_down_with_the_cli(tmp_path: Path) -> None:
    exe = executable()
    home = seed(tmp_path / "home", exe)
    port = free_port()
    env = cli_env(home, port, exe, **STRAY)  # the caller's stray variables must not reach the server
    credentials = json.loads((home / "labelstudio" / "credentials.json").read_text())

    up = loopline("up", "--json", env=env)
    assert up.returncode == 0, up.stderr
    st = json.loads(up.stdout)
    assert st["running"] is True and st["started"] is True
    assert st["url"] == f"http://127.0.0.1:{port}" and st["port"] == port and st["pid"] > 0
    for secret in (credentials["token"], credentials["password"]):
        assert secret not in up.stdout + up.stderr
    assert "token" not in st

    # It is ours: our account answers to our token, and no account came from USERNAME/PASSWORD.
    assert whoami(st["url"], credentials["token"])["email"] == LOCAL_USER == credentials["username"]
    users = get(f"{st['url']}/api/users/", credentials["token"])
    assert [u["email"] for u in users] == [LOCAL_USER]
    names = {kv.split(b"=", 1)[0].decode() for kv in Path(f"/proc/{st['pid']}/environ").read_bytes().split(b"\0") if kv}
    assert not names & set(STRAY), names
    assert not any(n.startswith("LOOPLINE_") for n in names)
    assert "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK" in names, "nobody signs up to read the served frames"
    assert stat.S_IMODE((home / "labelstudio" / "credentials.json").stat().st_mode) == 0o600

    again = loopline("up", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["pid"] == st["pid"] and json.loads(again.stdout)["started"] is False

    status = loopline("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    s = json.loads(status.stdout)
    assert (s["running"], s["pid"], s["url"], s["port"], s["projects"]) == (True, st["pid"], st["url"], port, 0)

    info = connection(Settings(home=home, label_studio_port=port))
    assert info is not None and (info.url, info.token, info.pid) == (st["url"], credentials["token"], st["pid"])
    assert info.files_root == (home / "frames").resolve(), "labelers see the frames, never the whole home"
    assert credentials["token"] not in repr(info)

    down = loopline("down", "--json", env=env)
    assert down.returncode == 0, down.stderr
    d = json.loads(down.stdout)
    assert d["running"] is False and d["stopped_pid"] == st["pid"]
    assert not _alive(st["pid"]) and not port_in_use(port)
    assert not (home / "labelstudio" / "server.json").exists()
    assert connection(Settings(home=home, label_studio_port=port)) is None
    assert json.loads(loopline("status", "--json", env=env).stdout)["running"] is False
    assert "not running" in loopline("down", env=env).stdout


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    exe = fake_executable(tmp_path, "sleep 60")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = loopline("up", "--json", env=cli_env(tmp_path / "home", port, exe))
    assert r.returncode == 1 and r.stdout == ""
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr and "LOOPLINE_LABEL_STUDIO_PORT" in r.stderr
    assert not (tmp_path / "ran").exists()


def test_a_server_that_dies_at_start_shows_its_log(tmp_path: Path) -> None:
    exe = fake_executable(tmp_path, "echo 'django.db.utils.OperationalError: disk I/O error'\nexit 3")
    server = LocalLabelStudio(tmp_path / "home", executable=exe, port=free_port())
    with pytest.raises(LabelStudioError, match="exited while starting") as caught:
        server.up(timeout=30)
    assert "disk I/O error" in str(caught.value)
    assert not server.state_file.exists() and server.info() is None


def test_a_missing_program_says_how_to_install_it(tmp_path: Path) -> None:
    server = LocalLabelStudio(tmp_path, executable=str(tmp_path / "nowhere" / "label-studio"), port=free_port())
    with pytest.raises(LabelStudioError, match="Run `make`"):
        server.up()


def test_a_database_without_its_credentials_is_refused(tmp_path: Path) -> None:
    server = LocalLabelStudio(tmp_path, executable=fake_executable(tmp_path, "sleep 60"), port=free_port())
    server.data_dir.mkdir(parents=True)
    (server.data_dir / "label_studio.sqlite3").write_bytes(b"")
    with pytest.raises(LabelStudioError, match="credentials.json"):
        server.up()
    assert not (tmp_path / "ran").exists()


def test_a_stale_state_is_not_running(tmp_path: Path) -> None:
    server = LocalLabelStudio(tmp_path, port=free_port())
    gone = subprocess.Popen(["true"])
    gone.wait()
    server.dir.mkdir(parents=True)
    server.state_file.write_text(json.dumps({"url": server.url, "port": server.port, "pid": gone.pid}))
    server.credentials_file.write_text(json.dumps({"username": LOCAL_USER, "password": "p", "token": "t" * 40}))
    st = server.status()
    assert st["running"] is False and "gone" in st["note"]
    assert server.info() is None
    assert server.down() is None and not server.state_file.exists()


def test_the_server_environment_is_built_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**STRAY, "LABEL_STUDIO_DEBUG": "true", "DJANGO_DB": "postgresql"}.items():
        monkeypatch.setenv(name, value)
    server = LocalLabelStudio(tmp_path, port=18090)
    env = server.child_env({"username": LOCAL_USER, "password": "p", "token": "a" * 40})
    assert not set(env) & {*STRAY, "LABEL_STUDIO_DEBUG"}
    assert env["DJANGO_DB"] == "sqlite" and env["LABEL_STUDIO_USER_TOKEN"] == "a" * 40
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str((tmp_path / "frames").resolve())


def test_an_existing_server_comes_from_the_settings(tmp_path: Path) -> None:
    info = connection(Settings(home=tmp_path, label_studio_url="http://ls.example:8080/", label_studio_token="k" * 40))
    assert (info.url, info.token, info.managed, info.pid) == ("http://ls.example:8080", "k" * 40, False, None)
    assert "k" * 40 not in json.dumps(info.public())
    with pytest.raises(LabelStudioError, match="LOOPLINE_LABEL_STUDIO_TOKEN"):
        connection(Settings(home=tmp_path, label_studio_url="http://ls.example:8080"))
    assert connection(Settings(home=tmp_path)) is None  # no local server running


@pytest.mark.slow
def test_the_fixture_restarts_on_the_same_data(label_studio: LabelStudioServer) -> None:
    body = json.dumps({"title": "restart-check", "label_config": "<View><Image name='i' value='$image'/></View>"})
    req = urllib.request.Request(
        f"{label_studio.url}/api/projects/",
        data=body.encode(),
        headers={"Authorization": f"Token {label_studio.token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        project = json.loads(resp.read())
    pid = label_studio.pid
    label_studio.restart()
    assert label_studio.pid not in (None, pid)
    titles = [p["title"] for p in get(f"{label_studio.url}/api/projects/", label_studio.token)["results"]]
    assert "restart-check" in titles
    assert whoami(label_studio.url, label_studio.token)["email"] == label_studio.username
    assert label_studio.files_root == (label_studio.home / "frames").resolve()
    assert project["id"] > 0
