"""Type stubs of the native module; tests/test_stubs.py checks them against the build."""

__version__: str
