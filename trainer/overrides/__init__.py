"""Lightning's ``lightning.pytorch.overrides`` path, for the names Lightning's own tests import from it."""
