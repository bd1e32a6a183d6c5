"""What several test modules build: small cubes, tiny checkpoints, predictions, patch datasets,
and the real one-node SLURM and S3 servers. Plain functions, no fixtures: the fixtures are in
``conftest.py``."""
