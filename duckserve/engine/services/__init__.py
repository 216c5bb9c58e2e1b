"""Services: a model version deployed on a compute pool (``lifecycle``), the MODEL_BUILD job that
builds what it runs (``build_job``), what one instance runs (``instances``), its GPUs and workers
(``gpus``), and what SHOW and DESCRIBE say of it (``views``)."""

from duckserve.engine.services.lifecycle import Services

__all__ = ["Services"]
