"""Running generated code and its tests in a subprocess with limits (see sandbox.runner)."""
from sandbox.runner import SandboxResult, isolation, run_python, run_tests

__all__ = ["SandboxResult", "isolation", "run_python", "run_tests"]
