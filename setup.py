"""Only what pyproject.toml cannot say: the top-level seeds/ ships inside the wheel as datagen/seeds/.

setuptools' package-dir maps a package to a directory, but packages.find cannot name a package
that has no directory of its own, so the package list is given here (its data files and the rest
are in pyproject.toml)."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["datagen*", "api*", "train*"], exclude=["*.__pycache__"]), "datagen.seeds"],
    package_dir={"datagen.seeds": "seeds"},
)
