"""How a run is driven: the traced child, the in-process plugin, real workers, attach."""
