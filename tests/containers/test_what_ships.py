"""What ships where: the car's images carry what runs in a car, not the emulator or fleetctl.

The images install car/pyproject.toml's distribution (docs/containers.md, "What ships
where"), so the connector must run, plan and check its policy there, and the emulator,
fleetctl and the bench must not be importable at all.
"""

from __future__ import annotations

import pytest
from containers.podman_kit import Images, podman

pytestmark = pytest.mark.containers

NOT_IN_A_CAR = ("ankaios_emulator", "fleetctl", "bench")
_TOOL_SCRIPTS = (
    "import shutil; print([s for s in ('fleetctl', 'ankaios-emulator') if shutil.which(s)])"
)


def run_python(image: str, code: str) -> tuple[int, str]:
    done = podman(
        "run", "--rm", "--network=none", "--entrypoint", "python", image, "-c", code, check=False
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("package", NOT_IN_A_CAR)
@pytest.mark.parametrize("which", ["connector", "sender"])
def test_the_images_do_not_carry_the_tools(images: Images, which: str, package: str) -> None:
    code, output = run_python(getattr(images, which), f"import {package}")
    assert code == 1, output
    assert f"ModuleNotFoundError: No module named '{package}'" in output


def test_the_connector_image_runs_the_connector_and_its_model(images: Images) -> None:
    done = podman("run", "--rm", "--network=none", images.connector, "--help", check=False)
    assert done.returncode == 0, done.stderr
    assert "VIN" in done.stdout
    # What a first plan or policy check loads on demand is in the image too.
    code, output = run_python(
        images.connector,
        "import fleet_connector.requests.plan, fleet_connector.requests.started, "
        "fleet_connector.journal.changes, fleet_connector.observe.logs; print('ok')",
    )
    assert (code, output.strip()) == (0, "ok")


def test_no_tool_scripts_in_the_images(images: Images) -> None:
    for image in (images.connector, images.sender):
        code, output = run_python(image, _TOOL_SCRIPTS)
        assert (code, output.strip()) == (0, "[]")
