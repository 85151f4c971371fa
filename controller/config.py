"""Controller configuration: file, environment and flags, in rising precedence.

The config file is YAML (see configs/iaasctl.yaml); it is found at --config,
IAASCTL_CONFIG, or /etc/iaasctl/config.yaml, and every key is optional.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from controller import __version__, filecache
from controller.digest import blake2b
from controller.errors import ConfigError

DEFAULT_CONFIG_FILE = "/etc/iaasctl/config.yaml"
DOMAIN_TYPES = ("auto", "kvm", "qemu")
DEFAULT_STATE_DIR = "/var/lib/iaasctl"
CONFIG_CACHE = "config.cache"


@dataclass(frozen=True)
class Config:
    """The controller's settings as load_config() resolves them; every duration is in seconds."""

    connect: str = "qemu:///system"
    state_dir: str = DEFAULT_STATE_DIR
    domain_type: str = "auto"
    parallelism: int = 32            # measured: docs/performance.md ("parallelism")
    shutdown_timeout: float = 60.0
    console_log_dir: str = "/var/log/libvirt/qemu"
    connect_timeout: float = 30.0      # a libvirtd that accepts and never answers fails after this
    # the daemon (iaasctl run)
    resync_interval: float = 300.0     # full pass at least this often, in case an event was lost
    debounce: float = 0.3              # quiet time after a manifest file event before the pass
    delete_grace: float = 30.0         # a vanished manifest's objects are kept this long
    backoff_base: float = 1.0          # first retry delay of a failing resource; doubles each time
    backoff_max: float = 300.0


def load_config(
    path: str | None = None, *, connect: str | None = None, state_dir: str | None = None
) -> Config:
    """Defaults < config file < environment < command-line flags."""
    config = _resolve(path, connect=connect, state_dir=state_dir, parse=True)
    assert config is not None   # noqa: S101 - _resolve parses whatever it has to
    return config


def cached_config(
    path: str | None = None, *, connect: str | None = None, state_dir: str | None = None
) -> Config | None:
    """load_config's result if it needs no YAML parser (no configuration file, or one
    whose settings are in the cache); None if it would parse."""
    return _resolve(path, connect=connect, state_dir=state_dir, parse=False)


def _resolve(path: str | None, *, connect: str | None, state_dir: str | None, parse: bool) -> Config | None:
    config = Config()
    file = path or os.environ.get("IAASCTL_CONFIG")
    if file is None and Path(DEFAULT_CONFIG_FILE).exists():
        file = DEFAULT_CONFIG_FILE
    env: dict[str, Any] = {
        "connect": os.environ.get("IAASCTL_CONNECT"),
        "domain_type": os.environ.get("IAASCTL_DOMAIN_TYPE"),
        "state_dir": os.environ.get("IAASCTL_STATE_DIR"),
    }
    if file:
        values = _from_file(file, state_dir=state_dir or env["state_dir"], parse=parse)
        if values is None:
            return None
        config = replace(config, **values)
    config = replace(config, **{k: v for k, v in env.items() if v})
    flags: dict[str, Any] = {"connect": connect, "state_dir": state_dir}
    config = replace(config, **{k: v for k, v in flags.items() if v})
    _check(config)
    return config


def _from_file(file: str, *, state_dir: str | None, parse: bool) -> dict[str, Any] | None:
    """The file's settings. Parsed settings are cached by the file's bytes in the state
    directory, so that a command does not import a YAML parser to read the same few
    keys each time — only in the directory the command uses: the one given
    (`state_dir`) or, when the file does not name another, the default."""
    try:
        with open(file, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the configuration: {exc}") from exc
    cache_in = state_dir or DEFAULT_STATE_DIR
    cache = Path(cache_in) / "cache" / CONFIG_CACHE
    key = blake2b(__version__.encode() + b"\0" + raw, digest_size=16).hexdigest()
    values: dict[str, Any] | None = filecache.read(cache, key)
    if values is None:
        if not parse:
            return None
        values = _parse(file, raw)
        if state_dir or values.get("state_dir", cache_in) == cache_in:
            filecache.write(cache, key, values)
    return values


def _parse(file: str, raw: bytes) -> dict[str, Any]:
    import yaml  # here, not at import: most runs have no config file or a cached one

    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: cannot read the configuration: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the configuration must be a mapping of keys to values")
    defaults = Config()
    unknown = sorted(set(data) - {f.name for f in fields(Config)})
    if unknown:
        raise ConfigError(f"{file}: unknown configuration keys: {', '.join(unknown)}")
    for key, value in data.items():
        default = getattr(defaults, key)
        if (isinstance(default, (int, float)) and not isinstance(value, (int, float))) or isinstance(value, bool):
            raise ConfigError(f"{file}: {key}: expected a number, got {value!r}")
        if isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{file}: {key}: expected a string, got {value!r}")
    return data


def _check(config: Config) -> None:
    if config.domain_type not in DOMAIN_TYPES:
        raise ConfigError(f"domain_type: {config.domain_type!r} is not one of {', '.join(DOMAIN_TYPES)}")
    if config.parallelism < 1:
        raise ConfigError(f"parallelism: {config.parallelism} must be at least 1")
    for key in ("shutdown_timeout", "debounce", "delete_grace"):
        if getattr(config, key) < 0:
            raise ConfigError(f"{key}: {getattr(config, key)} must not be negative")
    for key in ("connect_timeout", "resync_interval", "backoff_base", "backoff_max"):
        if getattr(config, key) <= 0:
            raise ConfigError(f"{key}: {getattr(config, key)} must be positive")


def resolve_domain_type(configured: str, offered: tuple[str, ...], *, kvm_works: bool) -> str:
    """The domain type new VMs get. `auto` takes kvm only when the host offers it and it
    works (nested virtualisation often offers /dev/kvm whose guests then hang), else qemu
    (TCG). A driver offering neither (libvirt's test driver) gets its own type."""
    if configured != "auto":
        if configured in offered:
            return configured
        if "kvm" not in offered and "qemu" not in offered and offered:
            return offered[0]
        raise ConfigError(f"domain_type {configured!r} is not offered by this host (it offers: "
                          f"{', '.join(offered) or 'nothing'})")
    if "kvm" in offered and kvm_works:
        return "kvm"
    if "qemu" in offered:
        return "qemu"
    if offered:
        return offered[0]
    raise ConfigError("the host offers no domain type for hvm guests")


def kvm_works() -> bool:
    """Whether KVM guests can be trusted to run here: /dev/kvm is usable and this
    machine is not itself a virtual machine (the `hypervisor` CPU flag), where nested
    KVM is known to hang guests. Set domain_type: kvm to override."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return " hypervisor" not in line
    except OSError:
        return False
    return True
