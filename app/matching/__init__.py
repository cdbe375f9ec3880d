"""Pure matching of a checkpoint index against a model index, plus the merge that writes it."""
