"""The test suite passes on any machine: a user's own models folder, templates and
device setting must not change a test's result. Here a few tests that touch all three run in a fresh
pytest process whose environment is hostile: a broken models.toml, a broken user template shadowing a
bundled one, and a device that does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ENVIRONMENT_SENSITIVE = (
    "test_pipeline.py::test_an_unexpected_error_in_one_template_is_recorded_and_the_others_finish",
    "test_templates.py::test_face_too_small",
    "test_faces.py::test_licence_safe_five_point_engine_matches_68",
    "test_cli_preprocess.py::test_too_few_photos_exit_2_with_advice",
)


@pytest.mark.slow
def test_environment_sensitive_tests_pass_in_a_hostile_user_environment(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "models.toml").write_text("[models.sd15\nthis is not toml")
    shadow = tmp_path / "templates" / "navy-formal"
    shadow.mkdir(parents=True)
    (shadow / "template.toml").write_text('name = "navy-formal"\nimage = "missing.jpg"\n')
    env = dict(os.environ, PORTRAIT_MODELS_DIR=str(models), PORTRAIT_TEMPLATES_DIR=str(tmp_path / "templates"),
               PORTRAIT_DEVICE="no-such-device", PORTRAIT_DTYPE="fp7")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           *(str(TESTS / t) for t in ENVIRONMENT_SENSITIVE)],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{len(ENVIRONMENT_SENSITIVE)} passed" in proc.stdout
