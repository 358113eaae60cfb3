"""deploy/kubernetes, checked: rendered as kustomize would (resources, patches, labels), every object
validated against Kubernetes' own schemas (kubernetes-validate, strict: an unknown field fails), the
pieces agreeing with each other and with the gateway (its config parses, its CLI takes the args, its
image's user runs it), and the gateway started as the Deployment says, answering what its probes ask.
The vLLM example's gateway is started too, with a llama-server that demands the key in its place."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from conftest import free_port
from llama_server import LlamaServer

from gateway.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.33.0"
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "labels"}


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge patch as kustomize applies one to these manifests: maps merge, lists of named
    maps (containers, env, volumes, ports) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(
            isinstance(i, dict) and "name" in i for i in [*base, *patch]):
        out_list = list(base)
        for item in patch:
            at = next((i for i, b in enumerate(out_list) if b["name"] == item["name"]), None)
            if at is None:
                out_list.append(item)
            else:
                out_list[at] = _merge(out_list[at], item)
        return out_list
    return patch


def render(folder: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert set(kustomization) <= KUSTOMIZATION_KEYS, "a field this renderer does not apply"
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = (folder / resource).resolve()
        docs += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}
        for change in yaml.safe_load_all((folder / patch["path"]).read_text()):
            at = [i for i, d in enumerate(docs) if (d["kind"], d["metadata"]["name"])
                  == (change["kind"], change["metadata"]["name"])]
            assert len(at) == 1, f"the patch {patch['path']} matches no single object"
            docs[at[0]] = _merge(docs[at[0]], change)
    for label in kustomization.get("labels", []):
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    return copy.deepcopy(docs)


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def _gateway_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _one(docs, "Deployment", "syn4pse")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "syn4pse")


def _syn4pse_yaml(docs: list[dict[str, Any]]) -> str:
    text: str = _one(docs, "ConfigMap", "syn4pse-config")["data"]["syn4pse.yaml"]
    return text


OVERLAYS = {"base": DEPLOY / "base", "vllm": DEPLOY / "examples" / "vllm"}


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_object_is_valid_kubernetes(name: str) -> None:
    docs = render(OVERLAYS[name])
    assert len(docs) >= 6
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_pieces_agree(name: str) -> None:
    docs = render(OVERLAYS[name])
    deployment = _one(docs, "Deployment", "syn4pse")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _one(docs, "Service", "syn4pse")["spec"]["selector"].items() <= labels.items()
    assert _one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "syn4pse"}
    queue_metric = next(m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    assert f'Gauge("{queue_metric}"' in (ROOT / "gateway" / "observability.py").read_text()
    container = _gateway_container(docs)
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user.group(1))
    secret = _one(docs, "Secret", "syn4pse-keys")
    assert set(secret["stringData"]) == {"SYN4PSE_API_KEYS", "SYN4PSE_ADMIN_KEYS"}
    config = parse_config(_syn4pse_yaml(docs), environ={})
    env = {e["name"] for e in container.get("env", [])}
    for model in config.models.values():
        key_env = model.options.get("api_key_env")
        if key_env:
            assert key_env in env, f"the gateway's pods get {key_env}, which options.api_key_env names"
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/syn4pse" in mounted and "/models" in mounted
    args = container["args"]
    assert Path(args[args.index("--config") + 1]).parent.as_posix() in mounted


def _start_as_deployed(docs: list[dict[str, Any]], workdir: Path, config: str,
                       extra_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The gateway started with the Deployment's args and the Secret's environment, its files in
    ``workdir`` instead of the pod's volumes."""
    container = _gateway_container(docs)
    secret = _one(docs, "Secret", "syn4pse-keys")["stringData"]
    (workdir / "syn4pse.yaml").write_text(config)
    args = list(container["args"])
    args[args.index("--config") + 1] = str(workdir / "syn4pse.yaml")
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    env = {**os.environ, **secret, **extra_env, "SYN4PSE_MODELS_PATH": str(workdir / "models"),
           "SYN4PSE_SERVER_GRPC_PORT": str(free_port()), "HOME": str(workdir)}
    log = workdir / "gateway.log"
    process = subprocess.Popen([sys.executable, "-m", "gateway", *args], env=env, stdout=log.open("wb"),
                               stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}", log


def _probe(container: dict[str, Any], url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(url + path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{probe} ({path}) never passed:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)


def test_the_gateway_runs_as_the_base_deployment_says(tmp_path: Path) -> None:
    docs = render(OVERLAYS["base"])
    process, url, log = _start_as_deployed(docs, tmp_path, _syn4pse_yaml(docs), {})
    try:
        _probe(_gateway_container(docs), url, process, log)
        key = _one(docs, "Secret", "syn4pse-keys")["stringData"]["SYN4PSE_API_KEYS"]
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 401, "the Secret's keys are asked for"
        answer = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=60,
                            json={"model": "gpt-4o-mini", "max_tokens": 5,
                                  "messages": [{"role": "user", "content": "Hi"}]})
        assert answer.status_code == 200, answer.text
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_vllm_example_gateway_serves_from_its_upstream(tmp_path: Path) -> None:
    docs = render(OVERLAYS["vllm"])
    vllm_key = _one(docs, "Secret", "vllm-key")["stringData"]["VLLM_API_KEY"]
    engine = LlamaServer(tmp_path).start("--api-key", vllm_key)  # in vLLM's place, asking for the same key
    config = re.sub(r"endpoints: \[[^\]]*\]", f"endpoints: [{engine.url}/v1]", _syn4pse_yaml(docs))
    process, url, log = _start_as_deployed(docs, tmp_path, config, {"VLLM_API_KEY": vllm_key})
    try:
        _probe(_gateway_container(docs), url, process, log)
        key = _one(docs, "Secret", "syn4pse-keys")["stringData"]["SYN4PSE_API_KEYS"]
        answer = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=60,
                            json={"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] > 0
        assert httpx.post(f"{engine.url}/v1/chat/completions", timeout=10, json={
            "messages": [{"role": "user", "content": "Hi"}]}).status_code == 401, "the engine does ask for its key"
    finally:
        process.terminate()
        process.wait(timeout=30)
        engine.kill()
