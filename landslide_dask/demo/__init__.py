"""The demo: synthetic event regions and a demo country written exactly like real data
(``synth``), and the runs of the whole pipeline on them or on a real event folder (``run``)."""

from ..common.lazy import lazy_exports

_EXPORTS = {
    "run_demo": ".run",
    "run_demo_country": ".run",
    "run_demo_real": ".run",
    "demo_train_config": ".run",
    "make_demo_data": ".synth",
    "make_demo_country": ".synth",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
