"""Sub-commands of the twelvefactor CLI: each module has configure(parser) setting a `run` default."""
