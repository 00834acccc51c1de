"""One typed settings object, assembled from layers whose origin is remembered.

Precedence, lowest first: built-in defaults, the config file, ``MODELYARD_*`` environment variables,
command-line flags. ``modelyard config`` prints every value with the layer it came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from modelyard.errors import ConfigError
from modelyard.kube.config import KubernetesSettings
from modelyard.sql.connections import Connection, check_no_password

ENV_PREFIX = "MODELYARD_"
URL_FILE = "url"  # in the home: the URL a running ``modelyard up`` serves its API on


class Settings(BaseSettings):
    """Everything a server or a client needs to know about where things are."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    home: Path = Field(
        default=Path("~/.modelyard"), description="Folder for the embedded database, blobs, keys."
    )
    database_url: str = Field(
        default="", description="sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
    )
    blob_url: str = Field(default="", description="file:///PATH or s3://BUCKET/PREFIX")
    blob_options: dict[str, Any] = Field(
        default_factory=dict,
        description='fsspec storage options as JSON, e.g. {"endpoint_url": ...} for S3',
    )
    cache_dir: Path | None = Field(default=None, description="Where pulled versions are kept.")
    orchestrator: str = Field(
        default="local",
        description="Where replicas run: local, kubernetes, or package.module:ClassName",
    )
    step_backend: str = Field(
        default="local",
        description="Where pipeline steps run: local, or package.module:ClassName",
    )
    kubernetes: KubernetesSettings = Field(
        default_factory=KubernetesSettings,
        description="With orchestrator=kubernetes: the cluster, namespaces and image",
    )
    connections: dict[str, Connection] = Field(
        default_factory=dict,
        description="Named SQL connections: url (no password), password_env or password_file, "
        "options, engine",
    )
    api_host: str = Field(default="127.0.0.1", description="Address the control plane binds.")
    api_port: int = Field(default=8700, ge=0, le=65535, description="Port of the control plane.")
    gateway_host: str = Field(default="127.0.0.1", description="Address the gateway binds.")
    gateway_port: int = Field(default=8701, ge=0, le=65535, description="Port of the gateway.")
    url: str = Field(default="", description="Control plane URL the SDK and CLI talk to.")
    api_key: SecretStr | None = Field(default=None, description="Key the SDK and CLI send.")
    max_body_mb: int = Field(default=64, ge=1, description="Largest request body the API takes.")
    draft_ttl_hours: float = Field(
        default=24.0, gt=0, description="Drafts untouched this long are garbage-collected."
    )
    pipeline_parallelism: int = Field(
        default=max(2, os.cpu_count() or 2), ge=1, description="Pipeline steps run at once."
    )
    step_grace_seconds: float = Field(
        default=5.0, ge=0, description="After SIGTERM, a cancelled step gets this long."
    )
    realtime_events_url: str = Field(
        default="",
        description="Raw event log: sqlite:///PATH (default: under home) or postgresql://",
    )
    realtime_queue_url: str = Field(
        default="", description="Queue of triggers: sqlite:///PATH (default) or nats://HOST:PORT"
    )
    realtime_predictions_url: str = Field(
        default="", description="Prediction store: sqlite:///PATH (default) or redis://HOST:PORT"
    )
    realtime_max_lag: int = Field(
        default=100_000, ge=1, description="Events pending per deployment before ingest gets 429."
    )
    realtime_max_lag_seconds: float = Field(
        default=0.0, ge=0, description="Age of the oldest pending event before 429 (0: off)."
    )
    migrate_on_start: bool = Field(
        default=True,
        description="The control plane migrates the database at start (false: a job does it, "
        "as the Helm chart's hook).",
    )
    lease_seconds: float = Field(
        default=15.0,
        ge=1,
        description="How long the control plane lease lasts unrenewed: a standby takes over this "
        "long after the holder died.",
    )
    lease_retry_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often the holder renews the lease and a standby tries to take it.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() merges the layers itself so that it knows where each value came from.
        return (init_settings,)

    @field_validator("connections", mode="before")
    @classmethod
    def _name_a_password_in_url(cls, value: Any) -> Any:
        # Before the entries are parsed: the error of one with a password names it.
        if isinstance(value, Mapping):
            for name, entry in value.items():
                url = entry.get("url") if isinstance(entry, Mapping) else None
                if isinstance(url, str):
                    check_no_password(url, str(name))
        return value

    @model_validator(mode="after")
    def _derive_from_home(self) -> Settings:
        if self.lease_retry_seconds * 3 > self.lease_seconds:
            raise ValueError(
                f"lease_retry_seconds ({self.lease_retry_seconds:g}) must be at most a third of "
                f"lease_seconds ({self.lease_seconds:g}), so that renewals outlast a slow one"
            )
        self.home = self.home.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'modelyard.db'}"
        if not self.blob_url:
            self.blob_url = (self.home / "blobs").as_uri()
        for name in ("events", "queue", "predictions"):
            if not getattr(self, f"realtime_{name}_url"):
                path = self.home / "realtime" / f"{name}.db"
                setattr(self, f"realtime_{name}_url", f"sqlite:///{path}")
        if self.cache_dir is None:
            self.cache_dir = self.home / "cache"
        self.cache_dir = self.cache_dir.expanduser()
        if not self.url:
            host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host
            self.url = f"http://{host}:{self.api_port}"
        self.url = self.url.rstrip("/")
        return self

    @property
    def admin_key_path(self) -> Path:
        return self.home / "admin.key"

    def resolved_api_key(self) -> str | None:
        """The key from ``MODELYARD_API_KEY``/flag, else the admin key file a local server wrote."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        try:
            return self.admin_key_path.read_text().strip() or None
        except OSError:
            return None


def record_url(home: Path, url: str) -> None:
    """Say in ``home`` where the API of ``modelyard up`` is, so that a client given the same home
    (and no URL, host or port) finds it on any port. Written atomically."""
    home.mkdir(parents=True, exist_ok=True)
    temp = home / f".{URL_FILE}.{os.getpid()}.tmp"
    with open(temp, "w") as handle:
        handle.write(url + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, home / URL_FILE)


def forget_url(home: Path, url: str) -> None:
    """At a clean stop: remove the record, unless another ``up`` wrote its own since."""
    path = home / URL_FILE
    try:
        if path.read_text().strip() == url:
            path.unlink()
    except OSError:
        pass


def recorded_url(home: Path) -> str | None:
    try:
        return (home / URL_FILE).read_text().strip() or None
    except OSError:
        return None


@dataclass
class LoadedSettings:
    settings: Settings
    origins: dict[str, str] = field(default_factory=dict)
    config_file: Path | None = None


def _config_file(explicit: Path | None, home: Path) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist: create it or drop --config")
        return explicit
    for name in ("config.toml", "config.yaml", "config.yml"):
        candidate = home / name
        if candidate.is_file():
            return candidate
    return None


def _read_file(path: Path) -> dict[str, Any]:
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"config file {path}: use a .toml or .yaml file")
    try:
        source: PydanticBaseSettingsSource = (
            TomlConfigSettingsSource(Settings, toml_file=path)
            if path.suffix == ".toml"
            else YamlConfigSettingsSource(Settings, yaml_file=path)
        )
        return dict(source())
    except Exception as exc:
        raise ConfigError(f"config file {path} does not parse: {exc}") from exc


def _problem(error: Any, origins: Mapping[str, str]) -> str:
    """One refused setting: where it is, where it came from (a file, a variable, a flag), why."""
    where = ".".join(str(p) for p in error["loc"])
    origin = origins.get(str(error["loc"][0])) if error["loc"] else None
    if error["type"] == "extra_forbidden":
        return f"{where} (from {origin}): no such setting (README, Configuration, lists them)"
    return f"{where} (from {origin}): {error['msg']}" if origin else f"{where}: {error['msg']}"


def load_settings(
    flags: Mapping[str, Any] | None = None, config_file: Path | None = None
) -> LoadedSettings:
    """Merge defaults < config file < environment < flags, remembering each value's origin."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = {k: v for k, v in EnvSettingsSource(Settings)().items() if v is not None}
    explicit = config_file or (
        Path(os.environ[f"{ENV_PREFIX}CONFIG"]) if os.environ.get(f"{ENV_PREFIX}CONFIG") else None
    )
    home = Path(flags.get("home") or env.get("home") or Settings.model_fields["home"].default)
    path = _config_file(explicit, home.expanduser())
    layers = [
        (f"file {path}", _read_file(path) if path else {}),
        (f"env {ENV_PREFIX}", env),
        ("flag", flags),
    ]
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for origin, values in layers:
        for key, value in values.items():
            merged[key] = value
            origins[key] = origin + (key.upper() if origin.startswith("env") else "")
    if not {"url", "api_host", "api_port"} & merged.keys():
        data = Path(merged.get("home", home)).expanduser().resolve()
        recorded = recorded_url(data)
        if recorded is not None:
            merged["url"] = recorded
            origins["url"] = f"file {data / URL_FILE} (written by modelyard up)"
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        problems = "; ".join(_problem(e, origins) for e in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from exc
    for name in Settings.model_fields:
        origins.setdefault(name, "default")
    derived_urls = ("realtime_events_url", "realtime_queue_url", "realtime_predictions_url")
    for derived in ("database_url", "blob_url", "cache_dir", "url", *derived_urls):
        if origins[derived] == "default":
            origins[derived] = "default (from home)" if derived != "url" else "default (from api)"
    return LoadedSettings(settings, origins, path)
