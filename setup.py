"""The one thing pyproject.toml cannot say: the top-level `templates/` folder (where the design card keeps
the bundled packs) ships inside the wheel as `portrait/bundled_templates/`, and `styles/` as
`portrait/bundled_styles/`, so a non-editable install
(`pip install .`, a wheel) has the bundled packs too (its package data is listed in pyproject.toml).
`portrait.templates.bundled_dir()` reads that folder when it exists, else the checkout's `templates/`."""

from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["portrait*", "preprocess*", "server*"])
    + ["portrait.bundled_templates", "portrait.bundled_styles"],
    package_dir={"portrait.bundled_templates": "templates", "portrait.bundled_styles": "styles"},
)
