"""Build each package's wheel and install it alone into a fresh virtual environment.

Each distribution must install with only its declared dependencies (the other TokenGate
wheels it depends on come from the freshly built wheels) and its import must work there.
Run by ``make wheels`` (part of ``make test``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# distribution -> code run in its lone environment (must exit 0)
CHECKS: dict[str, str] = {
    "tokengate-hashing": (
        "import tokengate.hashing as h, sys\n"
        "assert h.make_hashable([1, {'a': {2}}]) == h.make_hashable([1, {'a': {2}}])\n"
        "assert len(h.digest(b'abc', h.DigestPolicy.SHORT)) == 16\n"
        "assert 'pydantic' not in sys.modules and 'pluggy' not in sys.modules\n"
    ),
    "tokengate-core": (
        "from tokengate.core import OperationsCoordinator, task_token_guard, plugin_manager\n"
        "@task_token_guard(operation_type='double')\n"
        "def double(x: int) -> int:\n"
        "    return 2 * x\n"
        "with OperationsCoordinator(cores=2, workers_per_core=2):\n"
        "    assert double(21).get(10) == 42\n"
        "assert not plugin_manager().has_plugin('conductor')\n"
    ),
    "tokengate-conductor": (
        "from tokengate.core import OperationsCoordinator, task_token_guard, plugin_manager\n"
        "from tokengate.conductor import conductor_snapshot, get_active_seed\n"
        "assert plugin_manager().has_plugin('conductor'), plugin_manager().plugins()\n"
        "@task_token_guard(operation_type='child')\n"
        "def child() -> str | None:\n"
        "    return get_active_seed()\n"
        "@task_token_guard(operation_type='lead', tags={'external_calls': ['child']})\n"
        "def lead() -> str | None:\n"
        "    return child().get(10)\n"
        "with OperationsCoordinator(cores=2, workers_per_core=2) as c:\n"
        "    t = lead()\n"
        "    assert t.get(10) == t.conductor_seed is not None\n"
        "    assert not conductor_snapshot(c)\n"
    ),
    "tokengate-numeric": (
        "import sys\n"
        "import tokengate.numeric\n"
        "from tokengate.core import plugin_manager\n"
        "assert plugin_manager().has_plugin('numeric'), plugin_manager().plugins()\n"
        "heavy = {'numpy', 'pandas', 'torch', 'cupy', 'PIL'}\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
    ),
    "tokengate-dashboard": (
        "import urllib.request\n"
        "from tokengate.core import OperationsCoordinator\n"
        "from tokengate.dashboard import serve_dashboard\n"
        "with OperationsCoordinator(cores=1) as c:\n"
        "    with serve_dashboard(c, port=0) as d:\n"
        "        for path in ('', 'static/dashboard.js', 'static/dashboard.css', 'api/snapshot'):\n"
        "            with urllib.request.urlopen(d.url + path) as r:\n"
        "                assert r.status == 200 and r.read(), path\n"
    ),
    "tokengate-bench": (
        "import subprocess, sys\n"
        "from tokengate.core.cli import contributed_commands, main\n"
        "assert {'bench', 'demo'} <= set(contributed_commands())\n"
        "assert main(['demo', 'conductor', '--leads', '2', '--children', '1', '--quiet']) == 0\n"
        "assert main(['bench', '--waves', '1', '--warmup', '4', '--quiet']) == 0\n"
    ),
    "tokengate-dask": (
        "from tokengate.core import plugin_manager\n"
        "from tokengate.dask import DaskExecutor, DaskExecutorError\n"
        "assert 'dask' in plugin_manager().state().executors\n"
        "try:\n"
        "    DaskExecutor()\n"
        "except DaskExecutorError as exc:\n"
        "    assert 'client' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('no client: a clear error was expected')\n"
    ),
    "tokengate-otel": (
        "import importlib.metadata\n"
        "from tokengate.otel import TokenGateInstrumentor\n"
        "found = {ep.name: ep for ep in importlib.metadata.entry_points("
        "group='opentelemetry_instrumentor')}\n"
        "assert found['tokengate'].load() is TokenGateInstrumentor\n"
        "from tokengate.core import OperationsCoordinator, plugin_manager, task_token_guard\n"
        "instrumentor = TokenGateInstrumentor()\n"
        "instrumentor.instrument()\n"
        "with OperationsCoordinator(cores=1) as c:\n"
        "    assert task_token_guard('w')(lambda: 7)().get(10) == 7\n"
        "instrumentor.uninstrument()\n"
    ),
}


def run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def main() -> int:
    uv = os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".uvboot" / "bin" / "uv")
    python = os.environ.get("UV_PYTHON") or shutil.which("python3") or sys.executable
    with tempfile.TemporaryDirectory(prefix="tokengate-wheels-") as tmp:
        dist = Path(tmp) / "dist"
        for name in CHECKS:
            run(
                [uv, "build", "--quiet", "--wheel", "--package", name, "--out-dir", str(dist)],
                cwd=ROOT,
            )
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"}
        }
        for name, code in CHECKS.items():
            venv = Path(tmp) / f"venv-{name}"
            run([uv, "venv", "--quiet", "--python", python, str(venv)], env=env)
            vpy = str(venv / "bin" / "python")
            run(
                [
                    uv,
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    vpy,
                    "--find-links",
                    str(dist),
                    f"{name}==0.1.0",
                ],
                env=env,
            )
            site = subprocess.run(
                [vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            if (Path(site) / "tokengate" / "__init__.py").exists():
                print(
                    f"FAIL {name}: tokengate/__init__.py installed; tokengate must stay a namespace"
                )
                return 1
            run([vpy, "-c", code], env={**env, "PYTHONWARNINGS": "error"})
            print(f"ok   {name} installs alone and imports", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
