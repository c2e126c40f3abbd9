"""leakscope: find what a long-running worker keeps from every loop.

The public surface is deliberately tiny and imports nothing heavy, so that
``leakscope.tick()`` can stay in production code at no cost.
"""

from leakscope.measure.hook import StopTracing, tick

__version__ = "0.1.0"

__all__ = ["StopTracing", "tick", "__version__"]
