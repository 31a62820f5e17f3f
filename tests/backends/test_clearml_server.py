"""backend='clearml' against a real ClearML server: run only when one is configured.

Skipped unless ``CLEARML_API_HOST``, ``CLEARML_API_ACCESS_KEY`` and ``CLEARML_API_SECRET_KEY`` are set
(and the server answers a short connection check). The study test also needs
``HPOSDK_CLEARML_QUEUE``: a queue served by a ClearML agent on which hposdk is installed.
ClearML's HTTP retries are lowered to 2 for these tests (its default retries for minutes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("clearml")

_CONFIGURED = all(os.environ.get(k) for k in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"))
pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not _CONFIGURED, reason="no ClearML server configured (set CLEARML_API_HOST, "
                                               "CLEARML_API_ACCESS_KEY and CLEARML_API_SECRET_KEY)"),
]


@pytest.fixture(autouse=True)
def _server(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    from hposdk.backends.clearml._remote import check_server
    from hposdk.exceptions import ConfigError

    conf = tmp_path_factory.mktemp("clearml") / "clearml.conf"
    conf.write_text("api { http { retries { total: 2, connect: 2, read: 2, backoff_factor: 0.5 } } }\n"
                    "sdk { development { report_use_subprocess: false } }\n")
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(conf))
    monkeypatch.delenv("CLEARML_OFFLINE_MODE", raising=False)
    try:
        return check_server(5.0)
    except ConfigError as exc:
        pytest.skip(str(exc))


def test_base_task_is_created_with_the_study(tmp_path: Path) -> None:
    from clearml import Task

    from hposdk.backends._base import StudySpec
    from hposdk.backends.clearml._agent import STUDY_CONFIG
    from hposdk.backends.clearml._options import ClearMLOptions
    from hposdk.backends.clearml._remote import FleetIO
    from hposdk.spaces import Discrete, SearchSpace, Uniform

    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.25), "z": Discrete(["a", None])})
    spec = StudySpec(name="hposdk-server-test", objective=lambda t: 0.0,
                     objective_ref="hposdk.testing.objectives:quadratic", space=space, metric="loss", mode="min",
                     optimizer="grid", n_trials=1)
    task_id = FleetIO().create_base_task(spec, ClearMLOptions(executor="remote", project="hposdk-tests"))
    task: Any = Task.get_task(task_id=task_id)
    try:
        params = task.get_parameters(backwards_compatibility=False)
        assert params["Args/x"] == "0.0" and params["Args/z"] == "a"
        study = json.loads(task.get_configuration_object(STUDY_CONFIG))
        assert study["objective"] == "hposdk.testing.objectives:quadratic"
        assert task.data.script.entry_point.endswith("hposdk.backends.clearml._agent")
    finally:
        task.delete()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("HPOSDK_CLEARML_QUEUE"), reason="HPOSDK_CLEARML_QUEUE (a queue with an agent) "
                                                                       "is not set")
def test_grid_study_on_the_fleet(tmp_path: Path) -> None:
    from hposdk import Study
    from hposdk.result import TrialState
    from hposdk.spaces import SearchSpace, Uniform
    from hposdk.testing import objectives

    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.5)})
    result = Study(objectives.quadratic, space, metric="loss", backend="clearml", optimizer="grid",
                   backend_options={"executor": "remote", "queue": os.environ["HPOSDK_CLEARML_QUEUE"],
                                    "project": "hposdk-tests", "pool_period_min": 0.1, "report_period_min": 0.5},
                   storage=str(tmp_path), progress=False, name="hposdk-fleet-test").optimize()
    assert len(result.trials) == 3
    assert all(t.state is TrialState.COMPLETE for t in result.trials), [t.error for t in result.trials]
    assert result.best.params == {"x": 0.5}
