"""Running generated code and its tests in the sandbox engine (bubblewrap; see sandbox.engine)."""

from sandbox.engine import SandboxConfig, SandboxUnavailable
from sandbox.runner import SandboxResult, isolation, run_python, run_tests

__all__ = ["SandboxConfig", "SandboxResult", "SandboxUnavailable", "isolation", "run_python", "run_tests"]
