"""Only what pyproject.toml cannot say: the top-level seeds/ ships inside the wheel as datagen/seeds/.

setuptools' package-dir maps a package to a directory, but packages.find cannot name a package that
has no directory of its own, so the package list is given here (everything else is in pyproject.toml)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["datagen*", "api*", "train*"]), "datagen.seeds"],
    package_dir={"datagen.seeds": "seeds"},
    package_data={"datagen.seeds": ["en/seed_tasks.jsonl", "zh/zh_seed_tasks.jsonl"]},
)
