"""A sixth method kept outside the kit, as a researcher adding one would write it: its own folder and nothing
else in the library.  ``tests/test_new_method.py`` finds it through ``MLC_PLUGINS=mlc_dummy`` (with
``tests/plugins`` on ``PYTHONPATH``) and trains, claims and evaluates it like the five."""
from mlc_dummy import claim, model  # noqa: F401  (each registers what it defines)
