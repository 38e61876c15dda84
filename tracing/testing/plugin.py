"""tracehook's pytest plugin: assert, in your own CI, the trace a ``.delay()`` or a webhook produces.

Installed with tracehook (the ``pytest11`` entry point ``tracehook``), it stays off: a test session opts
in with ``tracehook = true`` in its pytest configuration, or ``pytest --tracehook``. Until then it adds
an option and an ini key, and its fixtures refuse to run; it has no autouse fixture and no collection
hook, so an unrelated suite runs as before. ``-p no:tracehook`` removes it altogether.

Fixtures (see docs/testing.md):

* ``tracehook_receiver`` (session): an OTLP/HTTP receiver on a free port, decoding what it gets.
* ``tracehook_producer``: this process traced, its spans exported to the receiver as they end.
* ``tracehook_worker``: a factory starting prefork workers of your Celery app that export to the
  receiver; every worker it started is stopped after the test, whatever the test's outcome.

Until a fixture runs, this module imports nothing of tracehook but the ``tracing`` package itself.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from tracing.testing._receiver import OtlpReceiver
    from tracing.testing._worker import Worker

__all__ = ["WorkerFactory", "enabled"]

_OPTION = "tracehook"
_OFF = (
    "tracehook's fixtures are off in this test session: opt in with `tracehook = true` in your pytest "
    "configuration ([tool.pytest.ini_options] in pyproject.toml, or [pytest] in pytest.ini), or run "
    "pytest --tracehook"
)
_LOG_TAIL = 6000
_workers_key = pytest.StashKey[list["Worker"]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--tracehook`` and the ``tracehook`` ini key: the session's opt-in."""
    group = parser.getgroup("tracehook", "tracehook: traces across processes")
    group.addoption(
        "--tracehook",
        action="store_true",
        dest=_OPTION,
        default=False,
        help="turn on tracehook's fixtures (tracehook_receiver, tracehook_producer, tracehook_worker)",
    )
    parser.addini(_OPTION, "turn on tracehook's fixtures (true/false)", type="bool", default=False)


def enabled(config: pytest.Config) -> bool:
    """Whether the session opted in to tracehook's fixtures."""
    return bool(config.getoption(_OPTION) or config.getini(_OPTION))


def _require(config: pytest.Config) -> None:
    if not enabled(config):
        pytest.fail(_OFF, pytrace=False)


@pytest.fixture(scope="session")
def tracehook_receiver(request: pytest.FixtureRequest) -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP trace receiver on ``127.0.0.1`` and a free port, for the whole session.

    It decodes what it receives (the bytes Jaeger would get) into ``ReceivedSpan`` objects. Tests tell
    their traces apart by trace id, so one receiver serves them all; it is stopped at the session's end.
    """
    _require(request.config)
    from tracing.testing._receiver import OtlpReceiver  # noqa: PLC0415

    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def tracehook_producer(
    request: pytest.FixtureRequest, tracehook_receiver: OtlpReceiver
) -> Iterator[TracerProvider]:
    """This process traced as a producer (``service.name`` ``test-producer``): each span is exported to
    ``tracehook_receiver`` as it ends. Tracing set up before is reset, and reset again after the test."""
    _require(request.config)
    from tracing.testing._producer import export_to  # noqa: PLC0415

    with export_to(tracehook_receiver) as provider:
        yield provider


class WorkerFactory:
    """Starts prefork workers of a Celery app for one test, and stops them all after it.

    Call it as :func:`tracing.testing.start_worker`, without ``receiver``, ``cwd`` or ``log_dir``: the
    workers export to ``tracehook_receiver``, run in the session's root directory and log to a temporary
    directory (the log of each is shown when the test fails).
    """

    def __init__(self, receiver: OtlpReceiver, cwd: Path, log_dir: Path) -> None:
        """A factory whose workers export to ``receiver``, run in ``cwd`` and log into ``log_dir``."""
        self.receiver = receiver
        self.cwd = cwd
        self.log_dir = log_dir
        self.started: list[Worker] = []

    def __call__(
        self,
        app: str,
        *,
        queues: Iterable[str] | None = None,
        concurrency: int = 2,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        extra_args: Sequence[str] = (),
        prefix: Sequence[str] = (),
        cwd: str | os.PathLike[str] | None = None,
        ready_timeout: float | None = 60.0,
        name: str | None = None,
    ) -> Worker:
        """Start a worker of ``app`` (``celery -A app worker --pool=prefork``); see ``start_worker``."""
        from tracing.testing._worker import start_worker  # noqa: PLC0415

        worker = start_worker(
            app,
            receiver=self.receiver,
            queues=queues,
            concurrency=concurrency,
            env=env,
            inherit_env=inherit_env,
            extra_args=extra_args,
            prefix=prefix,
            cwd=cwd if cwd is not None else self.cwd,
            log_dir=self.log_dir,
            ready_timeout=None,
            name=name,
        )
        self.started.append(worker)
        if ready_timeout is not None:
            worker.wait_ready(ready_timeout)
        return worker

    def stop_all(self) -> None:
        """Stop every worker started, the last first; each is stopped even if stopping another fails."""
        errors: list[BaseException] = []
        for worker in reversed(self.started):
            try:
                worker.stop()
            except BaseException as error:  # every worker must get its stop
                errors.append(error)
        if errors:
            raise errors[0]


@pytest.fixture
def tracehook_worker(
    request: pytest.FixtureRequest, tracehook_receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerFactory]:
    """A factory of prefork workers of your Celery app: ``worker = tracehook_worker("myapp.celery")``.

    Each worker consumes a queue of its own (``worker.queue``) unless ``queues`` is given, exports its spans
    to ``tracehook_receiver`` and is ready (it answers a ping) when the call returns. All are stopped after
    the test, passed or failed, interrupted included (SIGTERM, then SIGKILL of their process group).
    """
    _require(request.config)
    factory = WorkerFactory(
        tracehook_receiver, request.config.rootpath, tmp_path_factory.mktemp("tracehook-workers")
    )
    request.node.stash[_workers_key] = factory.started
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """On a failed test that started workers, add the end of each worker's log to the report."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    workers = item.stash.get(_workers_key, None)
    if workers and report.failed and call.when in {"setup", "call"}:
        for worker in workers:
            report.sections.append((f"tracehook worker {worker.hostname} log", worker.log[-_LOG_TAIL:]))
