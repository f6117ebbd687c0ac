"""deploy/k8s renders with kustomize exactly as the README's `kubectl kustomize` line does.

The pinned kustomize is built by `make deps-kustomize` (`go install` from the Go
module proxy, cached in ~/.cache/weir/bin). No cluster runs here, so the
rendered objects are compared with the manifests, not applied.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.unit.test_deploy_files import K8S, PART_OF, PIPELINE_YAML, manifests

REPO = Path(__file__).resolve().parents[2]
VERSION = re.search(r"^KUSTOMIZE_VERSION = (\S+)$", (REPO / "Makefile").read_text(), re.M)
assert VERSION, "the Makefile pins kustomize"
KUSTOMIZE = Path.home() / ".cache" / "weir" / "bin" / f"kustomize-{VERSION.group(1)}"


def rendered() -> list[dict]:
    assert KUSTOMIZE.exists(), f"{KUSTOMIZE} is missing: run `make deps-kustomize`"
    readme = (REPO / "README.md").read_text()
    line = re.search(r"^kubectl kustomize (.*?) \| kubectl apply -f -$", readme, re.M)
    assert line, "the README renders deploy/k8s with `kubectl kustomize … | kubectl apply`"
    args = line.group(1).split()
    assert args[-1] == K8S.relative_to(REPO).as_posix()
    run = subprocess.run(
        [str(KUSTOMIZE), "build", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def test_kustomize_renders_every_manifest_and_the_pipeline():
    docs = rendered()
    got = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    want = sorted(
        [(d["kind"], d["metadata"]["name"]) for _, d in manifests()]
        + [("ConfigMap", "weir-retrain-pipeline")]
    )
    assert got == want
    pipeline = next(d for d in docs if d["metadata"]["name"] == "weir-retrain-pipeline")
    assert pipeline["data"]["retrain.yaml"] == PIPELINE_YAML.read_text()
    for d in docs:
        meta = d["metadata"]
        assert meta["labels"][PART_OF] == "weir", meta["name"]
        if d["kind"] != "Namespace":
            assert meta["namespace"] == "weir", meta["name"]
