"""The retraining pipeline compiles, and deploy/pipelines/retrain.yaml is what it compiles to."""

from __future__ import annotations

from pathlib import Path

import yaml

from connectors.pipeline import BASE_IMAGE, PIPELINE_NAME, compile_pipeline

CHECKED_IN = Path(__file__).resolve().parents[2] / "deploy" / "pipelines" / "retrain.yaml"
STEPS = ("fetch", "train", "evaluate", "register", "record-failure")


def test_checked_in_pipeline_is_current(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "retrain.yaml")
    assert fresh.read_text() == CHECKED_IN.read_text(), (
        "run `python -m connectors.pipeline` and commit deploy/pipelines/retrain.yaml"
    )


def test_spec_names_the_steps_the_image_and_the_parameters() -> None:
    spec = yaml.safe_load(CHECKED_IN.read_text())
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME
    assert {f"comp-{step}" for step in STEPS} <= set(spec["components"])
    executors = spec["deploymentSpec"]["executors"]
    assert set(executors) == {f"exec-{step}" for step in STEPS}
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == BASE_IMAGE
        # the weir image brings weir and its pinned packages: nothing is installed at run time
        assert "pip install" not in " ".join(container["command"])
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {
        "model",
        "run_id",
        "current_version",
        "alert_id",
        "window_rows",
        "holdout_fraction",
        "min_gain",
        "max_p",
        "min_rows",
        "since",
    }


def test_fetch_gates_training_and_failure_is_the_other_branch() -> None:
    spec = yaml.safe_load(CHECKED_IN.read_text())
    assert set(spec["root"]["dag"]["tasks"]) == {"fetch", "condition-branches-1"}
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    usable = spec["components"][branches["condition-2"]["componentRef"]["name"]]["dag"]["tasks"]
    unusable = spec["components"][branches["condition-3"]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(usable) == {"train", "evaluate", "register"}
    assert usable["evaluate"]["dependentTasks"] == ["train"]
    assert sorted(usable["register"]["dependentTasks"]) == ["evaluate", "train"]
    assert set(unusable) == {"record-failure"}
    condition = branches["condition-2"]["triggerPolicy"]["condition"]
    assert condition == "inputs.parameter_values['pipelinechannel--fetch-Output'] == true"
