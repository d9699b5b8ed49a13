"""Running generated code and its tests in the sandbox engine (bubblewrap; see sandbox.engine)."""

from sandbox.engine import SandboxConfig, SandboxUnavailable
from sandbox.runner import SandboxResult, compared, isolation, run_python, run_tests

__all__ = ["SandboxConfig", "SandboxResult", "SandboxUnavailable", "compared", "isolation", "run_python", "run_tests"]
