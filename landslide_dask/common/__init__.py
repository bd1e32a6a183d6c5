"""What every stage shares: atomic file writes and hashing (``files``), which Dask workers are
connected and how many cores they have (``workers``), logs and progress bars (``logs``), and the
validation of YAML specs and cluster definitions (``validation``)."""
