"""Shared fixtures: study specs, the bundled example tables, a FAKE model server, a REAL S3 server."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipeline.config import example_study_path
from steps.inputs import load_study_table
from steps.studies import load_study
from tests.fakes.fake_openai_server import FakeOpenAIServer
from tests.s3_server import SeaweedS3


@pytest.fixture(autouse=True)
def no_kubernetes_credentials(monkeypatch, tmp_path_factory):
    """No test reaches a real cluster: no kubeconfig and no in-cluster ServiceAccount unless a test points at a FAKE one
    (tests/fakes/fake_kube_api.py), whatever the machine running the tests has."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path_factory.getbasetemp() / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture
def study1():
    return load_study(1)


@pytest.fixture
def study2():
    return load_study(2)


@pytest.fixture
def study1_table(study1):
    return load_study_table(example_study_path(1), study1)


@pytest.fixture
def study2_table(study2):
    return load_study_table(example_study_path(2), study2)


@pytest.fixture
def fake_server():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A REAL S3 server (SeaweedFS, bucket 'grace') shared by the tests of one module."""
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch):
    """The S3 server's endpoint and keys in this process's environment (as a client would have them)."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3


def read_rows(path: str) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def write_rows(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
