"""An example caviar plugin: the `resmlp` model family and the `spirals` data source."""
