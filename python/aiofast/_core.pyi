"""Type stubs of the native module; tests/test_package.py checks them against the build."""

__all__ = ["__version__"]

__version__: str
