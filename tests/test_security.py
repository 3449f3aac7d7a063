"""Security properties (see docs/security.md for the trust model).

* Entry-point plugins are code that runs when the plugin host is made; setting
  ``TOKENGATE_DISABLE_PLUGIN_AUTOLOAD=1`` (or ``PluginHost(autoload=False)``) keeps them from
  even being imported.
* Nothing unpickles data that did not come from the coordinator's own worker processes: a
  static audit of every source file of the four distributions finds unpickling only in the
  process executor's message reader and worker, and a runtime audit shows the coordinator's
  process unpickles only bytes it received over the private, unnamed socket pair of a worker
  process it spawned itself.
"""

from __future__ import annotations

import ast
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import reliability_targets as targets
from tests.support.reliability_checks import WAIT, assert_quiescent
from tokengate.core import OperationsCoordinator, PluginHost, task_token_guard
from tokengate.core._plugins import AUTOLOAD_ENV
from tokengate.core._process import ProcessExecutor
from tokengate.core._procpool_wire import MessageReader, Outbox

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "packages").glob("*/src/tokengate/**/*.py"))


# ---------------------------------------------------------------------- entry-point autoload
@pytest.fixture
def planted_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An installed-looking distribution whose ``tokengate`` entry point leaves a marker
    file when its module is imported. Yields (entry-point name, marker path)."""
    site = tmp_path / "site"
    site.mkdir()
    module = f"planted_tokengate_plugin_{os.getpid()}_{abs(hash(tmp_path)) % 10**8}"
    marker = tmp_path / "imported.marker"
    (site / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            Path({str(marker)!r}).write_text("imported")

            from tokengate.core import hookimpl

            @hookimpl
            def tokengate_coordinator_started(coordinator):
                pass
            """
        ),
        encoding="utf-8",
    )
    dist = site / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(f"[tokengate]\nplanted = {module}\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    yield "planted", marker
    sys.modules.pop(module, None)


@pytest.mark.parametrize("value", ["1", "true", "YES", " 1 "])
def test_autoload_env_var_keeps_entry_points_from_being_imported(
    planted_plugin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    name, marker = planted_plugin
    monkeypatch.setenv(AUTOLOAD_ENV, value)
    host = PluginHost()
    assert not host.has_plugin(name)
    assert not marker.exists(), "the entry point's module was imported although disabled"
    assert {info.name for info in host.plugins()} == {"tokengate.core.builtin"}


def test_autoload_off_by_argument_and_on_by_default(
    planted_plugin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, marker = planted_plugin
    monkeypatch.delenv(AUTOLOAD_ENV, raising=False)
    assert not PluginHost(autoload=False).has_plugin(name)
    assert not marker.exists()
    host = PluginHost()  # the default: entry points are code, and they run now
    assert host.has_plugin(name)
    assert marker.read_text() == "imported"
    assert {"conductor", "numeric", name} <= {info.name for info in host.plugins()}


def test_plugin_manager_honours_the_env_var_in_a_fresh_process(
    planted_plugin: tuple[str, Path],
) -> None:
    """``plugin_manager()`` (the process-wide host) reads the variable when it is created."""
    name, marker = planted_plugin
    script = (
        "from tokengate.core import plugin_manager\n"
        "print(sorted(info.name for info in plugin_manager().plugins()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != AUTOLOAD_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    disabled = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, AUTOLOAD_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        check=True,
    )
    assert disabled.stdout.strip() == "['tokengate.core.builtin']"
    assert not marker.exists()
    enabled = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        check=True,
    )
    assert f"'{name}'" in enabled.stdout
    assert marker.exists()


# ---------------------------------------------------------------------- static unpickling audit
#: Module attributes that deserialise data (or open something that does).
UNSAFE_CALLS = {
    "pickle": {"loads", "load", "Unpickler"},
    "_pickle": {"loads", "load", "Unpickler"},
    "marshal": {"loads", "load"},
    "shelve": {"open", "Shelf", "DbfilenameShelf"},
    "dill": {"loads", "load"},
    "cloudpickle": {"loads", "load"},
    "jsonpickle": {"decode"},
    "yaml": {"load", "unsafe_load", "full_load", "load_all"},
}
#: Modules that open a door to other processes or hosts (they are not used at all).
NETWORK_MODULES = {
    "socket",
    "socketserver",
    "http.server",
    "xmlrpc.server",
    "xmlrpc.client",
    "multiprocessing.managers",
    "asyncio.streams",
}
#: Names that, wherever they come from, mean unpickling from a connection or a listener.
UNSAFE_NAMES = {"Listener", "Client", "Manager", "BaseManager", "SyncManager"}

#: The only places allowed to unpickle: (file, function) → what they unpickle.
ALLOWED_UNPICKLING = {
    (
        "tokengate-core/src/tokengate/core/_procpool_wire.py",
        "MessageReader.read",
    ): "frames from the domain's own worker process (in the worker: from its parent), read "
    "from their private socket pair",
    (
        "tokengate-core/src/tokengate/core/_procpool_wire.py",
        "Outbox.read_all",
    ): "outcomes the domain's own worker process wrote to the memory it shares with its parent "
    "(made by the parent, handed only to that child)",
    (
        "tokengate-core/src/tokengate/core/_process_worker.py",
        "_load_function",
    ): "(in the worker process) a function its parent pickled by value and sent it",
    (
        "tokengate-core/src/tokengate/core/_process_worker.py",
        "_portable",
    ): "(in the worker process) a round trip of an exception it just pickled itself",
    # tokengate-dask: a Dask cluster is trusted by construction (distributed itself unpickles
    # every task and result it moves); these sites unpickle only what that cluster carries.
    (
        "tokengate-dask/src/tokengate/dask/_executor.py",
        "DaskExecutor._complete",
    ): "(in the client) outcomes of calls the user's own Dask cluster ran",
    (
        "tokengate-dask/src/tokengate/dask/_remote.py",
        "_run_one",
    ): "(on a Dask worker) the arguments of one call the client sent in a task",
    (
        "tokengate-dask/src/tokengate/dask/_remote.py",
        "_function",
    ): "(on a Dask worker) a function the client pickled by value and sent in a task",
    (
        "tokengate-dask/src/tokengate/dask/_remote.py",
        "_error",
    ): "(on a Dask worker) a round trip of an exception it just pickled itself",
}
#: Modules that may import ``socket``: only to wrap the unnamed socket pair that
#: ``multiprocessing`` makes between the coordinator and a worker process it spawns.
SOCKET_PAIR_ONLY = {
    "tokengate-core/src/tokengate/core/_procpool.py",
    "tokengate-core/src/tokengate/core/_procpool_wire.py",
    "tokengate-core/src/tokengate/core/_process_worker.py",
}
#: Distributions whose job is the network, with what each may do (reviewed): their findings
#: of network imports and ``Client`` calls are expected, and no other module may have them.
NETWORK_BY_DESIGN = {
    "tokengate-dask/src/tokengate/dask/_client.py": "connects a distributed.Client to the "
    "scheduler the user names (or the default client)",
    "tokengate-dask/src/tokengate/dask/_bench.py": "the Dask benchmark: a Client of a local "
    "cluster "
    "or of the scheduler given on its command line",
    "tokengate-bench/src/tokengate/bench/_special.py": "tokengate bench --executor dask: a Client "
    "of a LocalCluster it starts on 127.0.0.1",
    "tokengate-dashboard/src/tokengate/dashboard/_server.py": "serves the dashboard over HTTP "
    "(loopback unless told otherwise with an admin token)",
}
#: Calls that would give a socket an address or reach one.
ADDRESSING = {"bind", "listen", "accept", "connect", "create_server", "create_connection"}


class _Audit(ast.NodeVisitor):
    """Finds unpickling calls, ``.recv()`` on connections and network imports."""

    def __init__(self, relative: str) -> None:
        self.relative = relative
        self.scope: list[str] = []
        self.unpickling: list[tuple[str, str, int]] = []
        self.findings: list[str] = []
        self.aliases: dict[str, str] = {}

    def _where(self, node: ast.AST) -> str:
        return f"{self.relative}:{getattr(node, 'lineno', '?')}"

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = alias.name
            if alias.name == "socket" and self.relative in SOCKET_PAIR_ONLY:
                continue
            if alias.name in NETWORK_MODULES:
                self.findings.append(f"{self._where(node)} imports {alias.name}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            full = f"{module}.{alias.name}"
            if module in NETWORK_MODULES or full in NETWORK_MODULES:
                self.findings.append(f"{self._where(node)} imports {full}")
            if alias.name in UNSAFE_CALLS.get(module, set()) or alias.name in UNSAFE_NAMES:
                self.findings.append(f"{self._where(node)} imports {full}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            if isinstance(func.value, ast.Name):
                module = self.aliases.get(func.value.id, func.value.id)
                if func.attr in UNSAFE_CALLS.get(module, set()):
                    self.unpickling.append((self.relative, ".".join(self.scope), node.lineno))
            if func.attr == "recv":  # Connection.recv() unpickles what it reads
                self.findings.append(f"{self._where(node)} calls .recv() (unpickles)")
            if (
                func.attr in ADDRESSING
                and self.relative in SOCKET_PAIR_ONLY
                and ast.unparse(func.value) != "signature"  # inspect.Signature.bind
            ):
                self.findings.append(f"{self._where(node)} calls .{func.attr}()")
            if func.attr in UNSAFE_NAMES:
                self.findings.append(f"{self._where(node)} calls .{func.attr}()")
        elif isinstance(func, ast.Name) and func.id in UNSAFE_NAMES:
            self.findings.append(f"{self._where(node)} calls {func.id}()")
        self.generic_visit(node)


def test_sources_are_audited() -> None:
    packages = {path.relative_to(ROOT / "packages").parts[0] for path in SOURCES}
    assert packages == {
        "tokengate-hashing",
        "tokengate-core",
        "tokengate-conductor",
        "tokengate-numeric",
        "tokengate-bench",
        "tokengate-dask",
        "tokengate-otel",
        "tokengate-dashboard",
    }
    assert len(SOURCES) > 20


def test_unpickling_happens_only_in_the_process_backend() -> None:
    sites: set[tuple[str, str]] = set()
    findings: list[str] = []
    for path in SOURCES:
        relative = path.relative_to(ROOT / "packages").as_posix()
        audit = _Audit(relative)
        audit.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        sites |= {(file, scope) for file, scope, _ in audit.unpickling}
        findings += audit.findings
    findings = [f for f in findings if f.split(":", 1)[0] not in NETWORK_BY_DESIGN]
    assert findings == [], "\n".join(findings)
    unexpected = sites - set(ALLOWED_UNPICKLING)
    assert unexpected == set(), f"new unpickling sites need a security review: {unexpected}"
    assert ("tokengate-core/src/tokengate/core/_procpool_wire.py", "MessageReader.read") in sites


def test_the_worker_pipe_is_made_here_and_has_no_address() -> None:
    """Statically: the pool makes its socket pair with its own multiprocessing context and
    hands one end to the child it starts; frames are read only from that socket."""
    core = ROOT / "packages/tokengate-core/src/tokengate/core"
    tree = ast.parse((core / "_procpool.py").read_text())
    pipes = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "Pipe"
    ]
    assert len(pipes) == 1
    assert ast.unparse(pipes[0].func) == "self._context.Pipe"
    receivers: set[str] = set()
    for name in ("_procpool.py", "_procpool_wire.py", "_process_worker.py", "_process.py"):
        for node in ast.walk(ast.parse((core / name).read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"recv_bytes", "recv_bytes_into", "recv", "recv_into"}
            ):
                receivers.add(f"{name}:{ast.unparse(node.func.value)}")
    assert receivers == {"_procpool_wire.py:self._sock"}, receivers


# ---------------------------------------------------------------------- runtime unpickling audit
p_add = task_token_guard(
    "reliability.security.add", tags={"process_pool": True, "weight": "heavy"}
)(targets.add)
p_fail = task_token_guard(
    "reliability.security.fail", tags={"process_pool": True, "weight": "heavy"}
)(targets.fail)


def _parent_pid_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_coordinator_unpickles_only_what_its_own_worker_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    received: list[tuple[int, bytes]] = []
    unpickled: list[bytes] = []
    lock = threading.Lock()
    real_read = MessageReader.read
    real_loads = pickle.loads

    def recording_read(self: MessageReader) -> object:
        sock = self._sock
        real_recv_into = sock.recv_into

        class Recorder:
            def recv_into(self, view: Any, *args: Any) -> int:
                got = real_recv_into(view, *args)
                with lock:
                    received.append((sock.fileno(), bytes(view[:got])))
                return got

        self._sock = Recorder()  # type: ignore[assignment]
        try:
            return real_read(self)
        finally:
            self._sock = sock

    def recording_loads(data: Any, /, **kwargs: Any) -> Any:
        with lock:
            unpickled.append(bytes(data))
        return real_loads(data, **kwargs)

    shared: list[tuple[int, bytes]] = []
    real_get = Outbox._get

    def recording_get(self: Outbox, position: int, size: int) -> bytes:
        data = real_get(self, position, size)
        with lock:
            shared.append((id(self), data))
        return data

    monkeypatch.setattr(MessageReader, "read", recording_read)
    monkeypatch.setattr(Outbox, "_get", recording_get)
    monkeypatch.setattr(pickle, "loads", recording_loads)

    coordinator = OperationsCoordinator(cores=1, workers_per_core=1).start()
    try:
        assert p_add(2, 3).get(WAIT) == 5
        with pytest.raises(ValueError, match="refused"):
            p_fail("refused").get(WAIT)
        assert p_add(4, 5).get(WAIT) == 9
        backend = coordinator.backend("process", 1)
        assert isinstance(backend, ProcessExecutor)
        pool = backend.pools[0]
        proc = pool._proc
        assert proc is not None
        sock = proc.sock
        assert backend.pid is not None
        # The peer is a child this process spawned itself ...
        assert _parent_pid_of(backend.pid) == os.getpid()
        # ... over an unnamed socket pair: no address another process could connect to.
        assert sock.family == socket.AF_UNIX
        assert sock.getsockname() in ("", b"")
        assert sock.getpeername() in ("", b"")
        worker_fd = sock.fileno()
        worker_outbox = id(proc.outbox)
    finally:
        coordinator.stop(timeout=WAIT)
    assert_quiescent(coordinator)

    assert unpickled, "expected the answers to be unpickled"
    from_worker = b"".join(data for fd, data in received if fd == worker_fd)
    from_outbox = [data for box, data in shared if box == worker_outbox]
    for data in unpickled:
        assert data in from_worker or any(data in chunk for chunk in from_outbox), (
            "the coordinator unpickled bytes its worker did not hand it"
        )
    assert {fd for fd, _ in received} == {worker_fd}, "frames were read from another socket"
    assert {box for box, _ in shared} <= {worker_outbox}, "outcomes read from another outbox"
