"""Host tests of a Server Responder box (pytest-testinfra): the same suite checks a test box, a Vagrant VM
and an instance from the image. Hosts are named on the command line:

    python -m pytest tests/infra --hosts=ssh://HOST [--ssh-config=FILE] [--sudo]
    python -m pytest tests/infra --hosts=ssh://HOST --image   # a fresh image, before any user data

Without --hosts the directory is left out of the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance_host import Appliance


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--image", action="store_true",
                     help="the hosts are freshly provisioned images, before user data: check they hold no secret")
    parser.addoption("--vm", action="store_true",
                     help="the hosts are VMs or instances (cgroup v2 with every controller): job limits must hold")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image: a fact about a freshly provisioned image, before user data")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if not config.getoption("hosts", None) and collection_path.name.startswith("test_"):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--image runs the image facts only; without it, the facts of a running appliance only."""
    image = config.getoption("--image", False)
    selected, deselected = [], []
    for item in items:
        if not str(item.path).startswith(str(Path(__file__).parent)):
            selected.append(item)
        elif (item.get_closest_marker("image") is not None) == image:
            selected.append(item)
        else:
            deselected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.fixture(scope="module")
def appliance(host: Any) -> Appliance:
    return Appliance(host)
