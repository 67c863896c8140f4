"""The bottom layer: files, safe loading, progress, distributed helpers, suggestions and the registries."""
