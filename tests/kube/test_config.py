"""Where the cluster's credentials come from: the settings, a kubeconfig, or the pod itself."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from modelyard.errors import ConfigError
from modelyard.kube.config import KubernetesSettings, load_cluster


def kubeconfig(tmp_path: Path, user: dict[str, object]) -> Path:
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dev",
                "contexts": [
                    {"name": "dev", "context": {"cluster": "kind", "user": "me"}},
                    {"name": "prod", "context": {"cluster": "big", "user": "me"}},
                ],
                "clusters": [
                    {
                        "name": "kind",
                        "cluster": {
                            "server": "https://127.0.0.1:6443/",
                            "certificate-authority-data": base64.b64encode(b"CA").decode(),
                        },
                    },
                    {"name": "big", "cluster": {"server": "https://big:443"}},
                ],
                "users": [{"name": "me", "user": user}],
            }
        )
    )
    return path


def test_the_current_context_with_a_token(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"token": "abc"})
    cluster = load_cluster(KubernetesSettings(kubeconfig=path))
    assert cluster.server == "https://127.0.0.1:6443"
    assert cluster.bearer() == "abc"
    assert isinstance(cluster.verify, str) and Path(cluster.verify).read_bytes() == b"CA"


def test_a_named_context(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"token": "abc"})
    cluster = load_cluster(KubernetesSettings(kubeconfig=path, context="prod"))
    assert (cluster.server, cluster.verify) == ("https://big:443", True)


def test_what_does_not_work_says_why(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"token": "abc"})
    with pytest.raises(ConfigError, match=r"no context 'staging' \(it has: dev, prod\)"):
        load_cluster(KubernetesSettings(kubeconfig=path, context="staging"))
    plugin = kubeconfig(tmp_path, {"exec": {"command": "aws"}})
    with pytest.raises(ConfigError, match="exec or auth-provider"):
        load_cluster(KubernetesSettings(kubeconfig=plugin))
    with pytest.raises(ConfigError, match="cannot be read"):
        load_cluster(KubernetesSettings(kubeconfig=tmp_path / "missing"))


def test_an_explicit_api_url_needs_no_kubeconfig() -> None:
    assert load_cluster(KubernetesSettings(api_url="http://127.0.0.1:1/")).server == (
        "http://127.0.0.1:1"
    )
