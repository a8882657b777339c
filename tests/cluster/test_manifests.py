"""The files for running on a real cluster parse, keep token auth on, and match the specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from caviar.sweeps.search.specfile import load_spec

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "cluster").rglob("*.yaml"))


def _containers(document):
    """Every container spec in a Kubernetes object, however deeply nested."""
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "containers":
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(document, list):
        for item in document:
            yield from _containers(item)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_parse_and_keep_token_auth_on(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    defines_ray = any(d.get("kind") in ("RayCluster", "RayJob") for d in documents)
    if defines_ray or "head_start_ray_commands" in documents[0]:  # KubeRay, cluster launcher
        assert "RAY_AUTH_MODE=token" in path.read_text() or defines_ray
    for container in _containers(documents):
        if "ray-" in container["name"] or container["name"] == "retune":
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["RAY_AUTH_MODE"]["value"] == "token", f"{path.name}: {container['name']}"
            assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]


def test_cronjob_follows_the_retune_spec_schedule():
    cronjob = yaml.safe_load((ROOT / "cluster/kubernetes/retune-cronjob.yaml").read_text())
    spec = load_spec(ROOT / "sweeps/specs/retune.yaml")
    assert cronjob["spec"]["schedule"] == spec.retune.schedule
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
