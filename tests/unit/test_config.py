"""Controller configuration: precedence, checks, and the domain type choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from controller.config import Config, load_config, resolve_domain_type
from controller.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("IAASCTL_CONFIG", "IAASCTL_CONNECT", "IAASCTL_DOMAIN_TYPE", "IAASCTL_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("controller.config.DEFAULT_CONFIG_FILE", "/nonexistent/iaasctl.yaml")
    # where the parsed file would be cached when no state directory is given
    monkeypatch.setattr("controller.config.DEFAULT_STATE_DIR", str(tmp_path / "default-state"))


def test_defaults() -> None:
    assert load_config() == Config()
    assert Config().connect == "qemu:///system" and Config().state_dir == "/var/lib/iaasctl"


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "config.yaml"
    file.write_text("connect: test:///default\ndomain_type: qemu\nparallelism: 6\nstate_dir: /srv/state\n")
    assert load_config(str(file)) == Config(connect="test:///default", domain_type="qemu", parallelism=6,
                                            state_dir="/srv/state")
    monkeypatch.setenv("IAASCTL_CONNECT", "qemu+ssh://host/system")
    monkeypatch.setenv("IAASCTL_DOMAIN_TYPE", "kvm")
    assert load_config(str(file)).connect == "qemu+ssh://host/system"
    assert load_config(str(file)).domain_type == "kvm"
    assert load_config(str(file), connect="test:///default", state_dir="/x").connect == "test:///default"
    assert load_config(str(file), state_dir="/x").state_dir == "/x"


def _load_in_a_fresh_process(file: Path, state: Path | None) -> tuple[dict[str, object], bool]:
    """load_config in a new interpreter: (the settings, whether YAML was imported)."""
    code = ("import json, sys, dataclasses\n"
            "from controller.config import load_config\n"
            f"c = load_config({str(file)!r}, state_dir={str(state) if state else None!r})\n"
            "print(json.dumps([dataclasses.asdict(c), 'yaml' in sys.modules]))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IAASCTL_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=env, cwd=Path(__file__).resolve().parents[2])
    settings, imported = json.loads(done.stdout)
    return settings, imported


def test_a_config_file_is_parsed_once_per_content(tmp_path: Path) -> None:
    """The parsed file is cached by its bytes in the state directory: an unchanged file
    is read without importing YAML at all, an edited one is parsed again."""
    state = tmp_path / "state"
    state.mkdir()
    file = tmp_path / "config.yaml"
    file.write_text("parallelism: 6\n")
    assert _load_in_a_fresh_process(file, state) == (dict(asdict(Config()), parallelism=6, state_dir=str(state)),
                                                     True)
    assert (state / "cache" / "config.cache").stat().st_mode & 0o777 == 0o600
    assert _load_in_a_fresh_process(file, state)[1] is False
    file.write_text("parallelism: 3\n")
    settings, imported = _load_in_a_fresh_process(file, state)
    assert settings["parallelism"] == 3 and imported is True
    file.write_text("parallelism: lots\n")     # a bad edit is never served from the cache
    with pytest.raises(ConfigError, match="parallelism: expected a number"):
        load_config(str(file), state_dir=str(state))


def test_the_config_cache_is_only_kept_in_the_state_directory_in_use(tmp_path: Path) -> None:
    """A file that moves the state directory elsewhere leaves the default one alone."""
    default = tmp_path / "default-state"
    default.mkdir()
    file = tmp_path / "config.yaml"
    file.write_text(f"state_dir: {tmp_path / 'elsewhere'}\n")
    assert load_config(str(file)).state_dir == str(tmp_path / "elsewhere")
    assert not (default / "cache").exists()
    file.write_text("parallelism: 2\n")
    assert load_config(str(file)).parallelism == 2
    assert (default / "cache" / "config.cache").exists()


def test_the_shipped_example_config_loads() -> None:
    shipped = Path(__file__).resolve().parents[2] / "configs" / "iaasctl.yaml"
    assert load_config(str(shipped)) == Config()


@pytest.mark.parametrize(("text", "message"), [
    ("conect: x\n", "unknown configuration keys: conect"),
    ("parallelism: lots\n", "parallelism: expected a number"),
    ("parallelism: 0\n", "parallelism: 0 must be at least 1"),
    ("domain_type: xen\n", "domain_type: 'xen' is not one of auto, kvm, qemu"),
    ("- a\n", "must be a mapping"),
    ("connect: [a\n", "cannot read the configuration"),
])
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "config.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(file))


@pytest.mark.parametrize(("configured", "offered", "kvm_works", "chosen"), [
    ("auto", ("qemu", "kvm"), True, "kvm"),
    ("auto", ("qemu", "kvm"), False, "qemu"),   # nested virtualisation: /dev/kvm there, guests hang
    ("auto", ("qemu",), True, "qemu"),
    ("qemu", ("qemu", "kvm"), True, "qemu"),
    ("kvm", ("qemu", "kvm"), False, "kvm"),     # explicit wins over the probe
    ("auto", ("test",), False, "test"),         # libvirt's test driver
    ("qemu", ("test",), False, "test"),
])
def test_domain_type_choice(configured: str, offered: tuple[str, ...], kvm_works: bool, chosen: str) -> None:
    assert resolve_domain_type(configured, offered, kvm_works=kvm_works) == chosen


def test_explicit_kvm_on_a_host_without_it_is_an_error() -> None:
    with pytest.raises(ConfigError, match="domain_type 'kvm' is not offered by this host"):
        resolve_domain_type("kvm", ("qemu",), kvm_works=False)
