"""Schema and value validation off the event loop: in worker processes, with a deadline.

Why processes, not threads: a thread cannot be stopped, and while it runs Python code it holds the
GIL the event loop needs. The rules themselves are linear-time (RE2 patterns, capped sizes: see
models.schema_rules), so the deadline is a backstop, but a backstop that really stops: a worker
process past `validation_timeout_seconds` is killed and replaced, the caller gets ValidationTimeout.
Each worker process runs under an address-space limit (`validation_memory_mb`).

Layout: a ThreadPoolExecutor of `validation_workers` threads; each thread owns one worker process
(a fresh interpreter: nothing of the parent's state is shared), sends it one job at a time over a
pipe and waits for the answer at most the deadline. The event loop only awaits the thread's future. Workers
start on first use; `warm()` starts them ahead. Settings come from `configure(settings)` (at startup)
or else from models.settings.get_settings(). The deadline counts from when a worker takes the job:
beyond `validation_workers` concurrent validations, jobs wait their turn (the rate limits bound how
many), so a slow one costs its tenant a worker for at most the deadline, never the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from models.registry import SchemaViolation
from models.schema_rules import Limits

_STARTUP_SECONDS = 60.0  # a fresh worker imports jsonschema and pydantic; not part of any deadline


class ValidationAborted(Exception):
    """The validation did not finish: the caller answers 422 with this message."""


class ValidationTimeout(ValidationAborted):
    pass


@dataclass(frozen=True)
class Config:
    timeout_s: float = 2.0
    workers: int = 2
    memory_mb: int = 1024
    limits: Limits = Limits()

    @classmethod
    def from_settings(cls, settings: Any) -> Config:
        return cls(
            timeout_s=settings.validation_timeout_seconds,
            workers=settings.validation_workers,
            memory_mb=settings.validation_memory_mb,
            limits=Limits.from_settings(settings),
        )


_lock = threading.Lock()
_config: Config | None = None
_executor: ThreadPoolExecutor | None = None
_local = threading.local()


def configure(settings: Any) -> None:
    """Use these settings from now on (a change in the number of workers takes a new pool)."""
    global _config, _executor
    new = Config.from_settings(settings)
    with _lock:
        if _executor is not None and _config is not None and _config.workers != new.workers:
            _executor.shutdown(wait=False)
            _executor = None
        _config = new


def _current() -> tuple[Config, ThreadPoolExecutor]:
    global _config, _executor
    with _lock:
        if _config is None:
            from models.settings import get_settings

            _config = Config.from_settings(get_settings())
        if _executor is None:
            _executor = ThreadPoolExecutor(_config.workers, thread_name_prefix="specmill-validation")
        return _config, _executor


# --- the worker process --------------------------------------------------------------------------
# A plain subprocess (not multiprocessing: its spawn mode re-runs the parent's __main__ script), JSON
# lines over two pipes of its own (not pickle: nothing the worker sends can run code here), a minimal
# environment (it needs no secret), and an address-space limit set before it imports anything.

_CHILD = (
    "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
    "from models.schema_safety import _serve; _serve(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))"
)
_ENV_KEEP = ("PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")


def _serve(rfd: int, wfd: int, memory_mb: int) -> None:  # runs in the worker process
    import resource
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when it ends
    if memory_mb:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    from models import schema_rules

    jobs = {"schema_problems": schema_rules.schema_problems, "value_violations": schema_rules.value_violations}
    with os.fdopen(rfd, "rb") as inp, os.fdopen(wfd, "wb") as out:

        def send(doc: Any) -> None:
            out.write(json.dumps(doc).encode() + b"\n")
            out.flush()

        send("ready")
        for line in inp:  # until the parent closes the pipe, or is gone
            try:
                name, args, limits = json.loads(line)
                found = jobs[name](*args, schema_rules.Limits(**limits))
                send([True, [[v.path, v.message] for v in found]])
            except MemoryError:
                send([False, "validation ran out of memory: simplify the schema or the values"])
            except Exception as err:  # noqa: BLE001 - reported to the caller as a failed validation
                send([False, f"validation failed: {type(err).__name__}: {str(err)[:300]}"])


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        self._buf, self._closed = b"", True
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()
        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(sys.path), str(to_child), str(from_child), str(memory_mb)],
                pass_fds=(to_child, from_child),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        except OSError as err:
            os.close(self._r)
            os.close(self._w)
            raise ValidationAborted(f"the validation worker did not start: {err}") from err
        finally:
            os.close(to_child)
            os.close(from_child)
        self._closed = False
        if self._read(_STARTUP_SECONDS) != "ready":
            self.kill()
            raise ValidationAborted("the validation worker did not start")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self, timeout_s: float) -> Any:
        """The next JSON line from the worker; None past the deadline or when it is gone."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                return None
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def call(self, name: str, args: list, limits: Limits, timeout_s: float) -> list[list[str]]:
        data = json.dumps([name, args, dataclasses.asdict(limits)]).encode() + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(self._w, view) :]
        answer = self._read(timeout_s)
        if answer is None:
            gone = not self.alive()
            self.kill()
            if gone:  # killed from outside, or over its memory limit
                raise ValidationAborted("validation failed: the validation worker stopped")
            raise ValidationTimeout(
                f"validation took too long (over {timeout_s:g} s): simplify the schema or the values"
            )
        ok, result = answer
        if not ok:
            raise ValidationAborted(result)
        return result

    def __del__(self) -> None:  # a pool replaced by configure(): its threads' workers go with them
        try:
            self.kill()
        except Exception:  # noqa: BLE001 - at interpreter exit there is nothing left to clean
            pass

    def kill(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


def _run(name: str, args: list, config: Config) -> list[list[str]]:  # runs in an executor thread
    worker: _Worker | None = getattr(_local, "worker", None)
    if worker is None or not worker.alive():
        worker = _local.worker = _Worker(config.memory_mb)
    try:
        return worker.call(name, args, config.limits, config.timeout_s)
    except OSError:  # a broken pipe: this worker is of no further use
        worker.kill()
        _local.worker = None
        raise
    except ValidationAborted:
        if not worker.alive():
            _local.worker = None
        raise


async def _call(name: str, *args: Any) -> list[SchemaViolation]:
    config, executor = _current()
    loop = asyncio.get_running_loop()
    try:
        found = await loop.run_in_executor(executor, _run, name, list(args), config)
    except OSError as err:  # the worker could not be reached (a broken pipe)
        raise ValidationAborted("validation failed: the validation worker stopped") from err
    return [SchemaViolation(path=path, message=message) for path, message in found]


# --- the API ---------------------------------------------------------------------------------


async def check_schema(schema: dict[str, Any]) -> list[SchemaViolation]:
    """models.schema_rules.schema_problems, off the loop; ValidationAborted past the deadline."""
    return await _call("schema_problems", schema)


async def check_values(schema: dict[str, Any], values: Any) -> list[SchemaViolation]:
    """models.schema_rules.value_violations, off the loop; ValidationAborted past the deadline."""
    return await _call("value_violations", schema, values)


async def checked_value_violations(schema: dict[str, Any], values: Any) -> list[SchemaViolation]:
    """check_values for an activity: a validation that cannot finish is a violation (a problem the user
    reads), never an exception a retry would repeat."""
    try:
        return await check_values(schema, values)
    except ValidationAborted as err:
        return [SchemaViolation(path="$", message=str(err))]


async def warm() -> None:
    """Start every worker process now rather than on the first validations."""
    config, _ = _current()
    await asyncio.gather(*(check_values({}, None) for _ in range(config.workers)))
