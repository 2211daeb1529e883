"""Job specs: models, loading with positions, JSON Schema."""
