"""Helpers for process-boundary tests on any SkyRL version (imports no SkyRL): a fake installed
`flash_attn` (as on a GPU machine), fresh interpreters run concurrently, and where Ray finds the
class of an actor."""

import os
import signal
import subprocess
import time
from pathlib import Path

# Run in a fresh interpreter: the first statement checks that nothing of ours or SkyRL's was imported
# before, the last prints which flash_attn was used.
FRESH_IMPORT = """
import importlib, sys
assert not [m for m in sys.modules if m.split(".")[0] in ("skyrl", "skyrl_train", "gold_distillation", "flash_attn")]
{body}
print("flash_attn from", sys.modules["flash_attn"].__file__)
"""


def write_fake_flash_attn(folder) -> str:
    """A tiny installed-looking `flash_attn` package in folder (returned, for PYTHONPATH), so that
    fresh processes take the path of a GPU machine, where flash-attn is installed, and not the
    CPU stand-in of adapters/flash_attn_standin. Its functions are never called on CPU."""
    package = Path(folder) / "flash_attn"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('__version__ = "2.7.4"\n')
    (package / "bert_padding.py").write_text(
        "def pad_input(*args, **kwargs):\n    raise NotImplementedError('fake flash_attn')\n\n\n"
        "def unpad_input(*args, **kwargs):\n    raise NotImplementedError('fake flash_attn')\n"
    )
    return str(folder)


def with_pythonpath(first: str) -> dict:
    """os.environ with `first` in front of PYTHONPATH."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (first, os.environ.get("PYTHONPATH")) if p)}


def run_all(commands: dict, env, timeout=180, cwd=None) -> dict:
    """Run the commands concurrently (2 cores: each spends its time importing torch and SkyRL);
    returns {name: (returncode, stdout + stderr, seconds)}. A command still running at the
    timeout is killed with its whole process group (a Ray it may have started included)."""
    start = time.monotonic()
    procs = {name: subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True) for name, cmd in commands.items()}
    results = {}
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        results[name] = (proc.returncode, out, time.monotonic() - start)
    return results


def actor_class_location(actor_class) -> tuple[str, str]:
    """(module, qualified name) of the class a Ray worker process imports to create the actor."""
    cls = actor_class.__ray_metadata__.modified_class.__ray_actor_class__
    return cls.__module__, cls.__qualname__


def fresh_import_commands(python: str, handed: dict, entrypoint_body: str) -> dict:
    """{name: argv}: one fresh interpreter importing the entrypoint (entrypoint_body), and one per
    (module, qualname) of `handed` ({(module, qualname): [users]}) getting the class from its module."""
    bodies = {
        "entrypoint": entrypoint_body,
        **{", ".join(users): f"getattr(importlib.import_module({module!r}), {qualname!r})" for (module, qualname), users in handed.items()},
    }
    return {name: [python, "-c", FRESH_IMPORT.format(body=body)] for name, body in bodies.items()}
