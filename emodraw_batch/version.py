"""The package's version, in a base module of its own.

Modules inside the package read it from here, never from `emodraw_batch` itself: the root's
`__init__` names the job layer, so importing the root from inside would be an import circle
(tests/test_layers.py). Keep it equal to `version` in pyproject.toml (tests/test_api.py checks).
"""

__version__ = "0.1.0"
