"""One folder per method (detectron2's ``projects/``): its model, how it trains, its official checkpoint format,
its paper's claim and its own figures, each registered with :mod:`mlc.core.registry`.  Nothing outside this
folder names a method.

Importing this package imports every method folder in it, so a new method is a new folder (CONTRIBUTING.md).
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
