"""Start-up hook of `leakscope run`: arms every Python process the command starts.

`leakscope run` puts this directory first on PYTHONPATH and sets
LEAKSCOPE_AGENT, so the interpreter's `site` imports this module at start-up
in the command and in every Python process it starts (forked children are
armed by an at-fork handler instead). It then runs the sitecustomize that
this one shadows, if there is one, so a Debian or virtualenv customisation
still applies. Outside `leakscope run` it does nothing but that; in a Python
started after the run ended (by a daemon that escaped it), it arms nothing
and takes leakscope's entries out of the environment (agent.activate).
"""

import importlib.machinery
import importlib.util
import os
import sys


def _arm() -> None:
    if not os.environ.get("LEAKSCOPE_AGENT"):
        return
    try:
        from leakscope.drive import agent
    except ImportError:
        sys.stderr.write(
            "leakscope: this Python cannot import leakscope; "
            f"{sys.executable} runs untraced\n"
        )
        return
    try:
        agent.activate()
    except Exception as exc:  # noqa: BLE001 - never stop the worker from starting
        sys.stderr.write(f"leakscope: could not arm this process: {type(exc).__name__}: {exc}\n")


def _chain() -> None:
    """Run the next sitecustomize on sys.path, as if this one were not here."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_arm()
_chain()
