"""What can be checked of the steps image without a Docker engine."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_entrypoint_is_the_packages_cli_and_user_is_not_root():
    dockerfile = (REPO / "images" / "steps.Dockerfile").read_text()
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = re.findall(r"^ENTRYPOINT (.+)$", dockerfile, re.MULTILINE)
    assert json.loads(entrypoint)[0] in scripts
    assert re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)[-1] not in ("root", "0")


def test_image_copies_every_package():
    dockerfile = (REPO / "images" / "steps.Dockerfile").read_text()
    for package in ("pipeline", "steps", "schemas"):
        assert f"COPY {package} {package}" in dockerfile


def test_workflow_runs_the_images_user_and_the_tag_the_build_script_makes():
    from pipeline import __version__
    from pipeline.cluster.workflow import STEPS_IMAGE, STEPS_UID, VLLM_IMAGE

    dockerfile = (REPO / "images" / "steps.Dockerfile").read_text()
    assert f"--uid {STEPS_UID} " in dockerfile and re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)[-1] == str(STEPS_UID)
    build = (REPO / "images" / "build.sh").read_text()
    assert 'registry=${REGISTRY:-ghcr.io/grace-pipeline}' in build and 'image="${registry}/steps:${version}"' in build
    assert STEPS_IMAGE == f"ghcr.io/grace-pipeline/steps:{__version__}"
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", VLLM_IMAGE) and VLLM_IMAGE in (REPO / "images" / "README.md").read_text()


def test_build_script_is_valid_bash():
    import subprocess

    assert subprocess.run(["bash", "-n", str(REPO / "images" / "build.sh")]).returncode == 0


def test_runtime_libraries_are_installed_and_checked_by_the_build():
    """llama.cpp needs libgomp.so.1 at run time (python:*-slim lacks it); the image's own build imports the native
    module and runs the CLI after the last install, as the non-root user, so a missing library fails the build."""
    dockerfile = (REPO / "images" / "steps.Dockerfile").read_text()
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert re.search(r"apt-get install -y --no-install-recommends [^\n]*\blibgomp1\b", final)
    (check,) = re.findall(r"^RUN (python -c .*)$", final, re.MULTILINE)
    assert "import llama_cpp" in check and "grace-pipeline --version" in check
    assert final.index(check) > final.index("pip install") and final.index(check) > final.index("USER 10001")


def test_the_llama_cpp_layer_pins_the_packages_version():
    dockerfile = (REPO / "images" / "steps.Dockerfile").read_text()
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = [d for d in dependencies if d.startswith("llama-cpp-python")]
    assert f'pip wheel --no-cache-dir --wheel-dir /wheels "{pinned[0]}"' in dockerfile
    assert dockerfile.index(pinned[0]) < dockerfile.index("COPY pipeline pipeline")  # compiled before the code is copied
