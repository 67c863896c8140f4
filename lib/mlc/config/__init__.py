"""The params: typed dataclasses for every section of a params file and the YAML loader (``load_params``)."""
