"""The network: backbones, pooling heads, the PlaceModel, its files (own, imported, named) and
the forward pass that turns photos into descriptors. Importing this package imports nothing
heavy: torch comes in with the modules that need it."""
