"""Maps the repository's top-level folders onto the `tracehouse.*` package tree (DESIGN §3).

The folders stay at the top level so the layout reads like the design picture, while the
installed names cannot clash with other software's `collector` or `query` modules.
"""
from setuptools import find_packages, setup

FOLDERS = {
    "tracehouse": "core",
    "tracehouse.collector": "collector",
    "tracehouse.instrumentation": "instrumentation",
    "tracehouse.query": "query",
    "tracehouse.proto": "proto",
    "tracehouse.deploy": "deploy",
    "tracehouse.tests": "tests",
}

packages = []
package_dir = {}
for package, folder in FOLDERS.items():
    package_dir[package] = folder
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "tracehouse.deploy": ["**/*"],
        "tracehouse.query": ["static/**/*"],
        "tracehouse.query.ui": ["static/**/*"],
    },
)
