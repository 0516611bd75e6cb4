"""function/config.py: read once, validated, errors that name the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from function import config_doc
from function.config import GROUPS, PREFIX, ConfigError, Settings, variables
from tests.conftest import ROOT, free_port
from tests.ecs import entries, field


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.port == 8080 and settings.preprocessing == "standard"
    assert settings.runtime == "onnxruntime" and settings.max_pixels == 50_000_000
    assert settings.max_batch_urls == 16 and settings.max_frames == 8
    assert settings.max_body_bytes == settings.max_fetch_bytes == 25 * 1024 * 1024
    assert settings.allow_private_networks is False and settings.allowed_hosts == ()
    assert settings.max_redirects == 5 and "nsfwoid" in settings.user_agent
    assert settings.event_source == "/nsfwoid"


def test_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "PORT": "9000",
            "NSFWOID_PREPROCESSING": "Reference",
            "NSFWOID_RUNTIME": "tensorflow",
            "NSFWOID_MODEL_DIR": "/srv/model",
            "NSFWOID_ALLOWED_HOSTS": "upload.wikimedia.org, *.example.org.",
            "NSFWOID_ALLOW_PRIVATE_NETWORKS": "yes",
            "NSFWOID_FETCH_DEADLINE": "2.5",
            "NSFWOID_DRAIN_SECONDS": "0",
            "NSFWOID_LOG_LEVEL": "debug",
            "K_SERVICE": "nsfwoid",
            "K_REVISION": "nsfwoid-00002",
        }
    )
    assert settings.port == 9000 and settings.preprocessing == "reference"
    assert settings.runtime == "tensorflow" and settings.model_dir == Path("/srv/model")
    assert settings.allowed_hosts == ("upload.wikimedia.org", "*.example.org")
    assert settings.allow_private_networks is True and settings.fetch_deadline == 2.5
    assert settings.log_level == "DEBUG" and settings.drain_seconds == 0
    assert Settings.from_env({}).drain_seconds == 5
    assert settings.event_source == "/nsfwoid/nsfwoid-00002"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "-1"),
        ("NSFWOID_PREPROCESSING", "fancy"),
        ("NSFWOID_RUNTIME", "onnx"),
        ("NSFWOID_MAX_PIXELS", "0"),
        ("NSFWOID_FETCH_DEADLINE", "nan"),
        ("NSFWOID_ALLOW_PRIVATE_NETWORKS", "maybe"),
        ("NSFWOID_ALLOWED_HOSTS", "*example.org"),
        ("NSFWOID_MAX_REDIRECTS", "-2"),
        ("NSFWOID_DRAIN_SECONDS", "-1"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name) as raised:
        Settings.from_env({name: value})
    assert raised.value.variable == name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NSFWOID_MAX_IN_FLIGHT", "abc"),
        ("NSFWOID_CA_BUNDLE", "/nonexistent/internal-ca.pem"),  # parsed fine, absent at start
    ],
)
def test_a_bad_value_at_start_up_is_one_json_line_and_exit_2(name: str, value: str) -> None:
    env = {**os.environ, "PORT": str(free_port()), name: value}
    done = subprocess.run(
        [sys.executable, "-m", "function.serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 2, (out, err)
    assert "Traceback" not in out + err, (out, err)
    lines = out.splitlines()
    assert len(lines) == 1, lines
    (entry,) = entries(out)
    assert field(entry, "log.level") == "error"
    assert name in entry["message"] and value in entry["message"]
    assert field(entry, "nsfwoid.variable") == name


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_available_cpus_honours_a_cgroup_quota(tmp_path: Path) -> None:
    from function.config import available_cpus

    quota = tmp_path / "cpu.max"
    unlimited = available_cpus(tmp_path / "absent")
    assert unlimited >= 1
    quota.write_text("max 100000\n")
    assert available_cpus(quota) == unlimited
    quota.write_text("150000 100000\n")  # 1.5 CPUs → 2 threads, never more than the affinity
    assert available_cpus(quota) == min(2, unlimited)
    quota.write_text("50000 100000\n")
    assert available_cpus(quota) == 1


def test_every_setting_names_its_variable_and_says_what_it_means() -> None:
    found = variables()
    assert set(found) == {f.name for f in fields(Settings)}
    envs = [var.env for var in found.values()]
    assert len(set(envs)) == len(envs), envs
    for name, var in found.items():
        assert var.env.startswith(PREFIX) or var.env in ("PORT", "K_SERVICE", "K_REVISION"), name
        assert var.group in GROUPS and var.doc.strip(), name
    # The machine-dependent default is described, not printed as this machine's value.
    assert "CPUs" in (found["inference_threads"].shown_default or "")


def test_the_configuration_page_is_current() -> None:
    page = ROOT / "docs" / "configuration.md"
    assert page.read_text(encoding="utf-8") == config_doc.render(), (
        "docs/configuration.md is stale: regenerate it with `make docs` "
        "(python -m function.config_doc --write)"
    )


def test_the_page_check_fails_on_a_stale_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "configuration.md"
    monkeypatch.setattr(config_doc, "PAGE", page)
    monkeypatch.setattr(config_doc, "REPO_ROOT", tmp_path)
    page.write_text(config_doc.render().replace("NSFWOID_MAX_PIXELS", "NSFWOID_MAX_PIXEL"))
    assert config_doc.main(["--check"]) == 1
    assert "make docs" in capsys.readouterr().err
    assert config_doc.main(["--write"]) == 0 and config_doc.main(["--check"]) == 0
    assert "| `NSFWOID_MAX_PIXELS` | `50000000` |" in page.read_text(encoding="utf-8")
