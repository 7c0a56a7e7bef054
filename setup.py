"""Shim for tools that still call `setup.py`; every setting lives in pyproject.toml."""

from setuptools import setup

setup()
