"""HTTP layer: thin routes that validate, store, record, submit and answer."""
