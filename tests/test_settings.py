from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.controlplane import ControlPlane
from modelyard.errors import ConfigError
from modelyard.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("MODELYARD_"):
            monkeypatch.delenv(name)


def test_defaults_live_under_home(tmp_path: Path) -> None:
    loaded = load_settings({"home": tmp_path})
    s = loaded.settings
    assert s.database_url == f"sqlite:///{tmp_path / 'modelyard.db'}"
    assert s.blob_url == (tmp_path / "blobs").as_uri()
    assert s.url == "http://127.0.0.1:8700"
    assert loaded.origins["home"] == "flag"
    assert loaded.origins["database_url"] == "default (from home)"


def test_flags_beat_env_which_beats_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.toml").write_text(
        'api_port = 9000\ngateway_port = 9001\nblob_url = "s3://bucket/x"\n'
        'blob_options = {endpoint_url = "http://127.0.0.1:9"}\n'
    )
    monkeypatch.setenv("MODELYARD_HOME", str(tmp_path))
    monkeypatch.setenv("MODELYARD_API_PORT", "9100")
    monkeypatch.setenv("MODELYARD_GATEWAY_PORT", "9101")
    loaded = load_settings({"gateway_port": 9201})
    s = loaded.settings
    assert (s.api_port, s.gateway_port, s.blob_url) == (9100, 9201, "s3://bucket/x")
    assert s.blob_options == {"endpoint_url": "http://127.0.0.1:9"}
    assert loaded.origins["api_port"] == "env MODELYARD_API_PORT"
    assert loaded.origins["gateway_port"] == "flag"
    assert loaded.origins["blob_url"] == f"file {tmp_path / 'config.toml'}"
    assert s.url == "http://127.0.0.1:9100"


def test_yaml_config_and_api_key_file(tmp_path: Path) -> None:
    config = tmp_path / "my.yaml"
    config.write_text("max_body_mb: 8\n")
    (tmp_path / "admin.key").write_text("my_abc_def\n")
    loaded = load_settings({"home": tmp_path}, config_file=config)
    assert loaded.settings.max_body_mb == 8
    assert loaded.settings.resolved_api_key() == "my_abc_def"
    assert (
        load_settings({"home": tmp_path, "api_key": "my_x_y"}).settings.resolved_api_key()
        == "my_x_y"
    )


@pytest.mark.parametrize(
    "content", ["api_port = 'many'\n", "no_such_setting = 1\n", "api_port = 70000\n", "[broken\n"]
)
def test_bad_config_says_what_is_wrong(tmp_path: Path, content: str) -> None:
    (tmp_path / "config.toml").write_text(content)
    with pytest.raises(ConfigError):
        load_settings({"home": tmp_path})


def test_a_refused_setting_names_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.toml").write_text("api_port = 'many'\nno_such_setting = 1\n")
    with pytest.raises(ConfigError) as refused:
        load_settings({"home": tmp_path})
    assert f"api_port (from file {tmp_path / 'config.toml'})" in str(refused.value)
    assert "no_such_setting" in str(refused.value) and "no such setting" in str(refused.value)
    monkeypatch.setenv("MODELYARD_GATEWAY_PORT", "lots")
    with pytest.raises(ConfigError, match=r"gateway_port \(from env MODELYARD_GATEWAY_PORT\)"):
        load_settings({"home": tmp_path / "other"})


def test_a_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"home": tmp_path}, config_file=tmp_path / "nope.toml")


def test_a_realtime_url_no_backend_takes_stops_the_start(tmp_path: Path) -> None:
    """Refused as the control plane is built (``modelyard up`` exits 2), not at the first event."""
    settings = Settings(home=tmp_path, realtime_queue_url="bogus://x")
    with pytest.raises(ConfigError, match=r"no realtime queue for 'bogus://x'.*nats://"):
        ControlPlane.build(settings)
