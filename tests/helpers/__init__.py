"""What several test modules build: small cubes, tiny checkpoints, predictions, patch datasets,
and the real one-node SLURM and S3 servers. Plain functions, no fixtures: the fixtures are in the
``conftest.py`` files."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The real data of the workplace (present in CI; a test needing it skips with a reason where absent).
SHARED_DATA = REPO.parent / "shared" / "data"
CLUSTER = REPO / "cluster"
BENCH = REPO / "benchmarks"
#: The small demo country of the tests: ~3 x 3 km across 84 E, 4 granules in 45N, 2 in 44N.
SMALL_COUNTRY_BBOX = (83.985, 28.195, 84.015, 28.222)
