"""One package per paper: ``uc``, ``mem``, ``ntp`` (later ``ubt``, ``lto``).

Each package's ``__init__`` is its public surface (``ob.uc``, ``ob.mem``, ``ob.ntp``): ``Config``,
``Result``, the paper's verb (``protect``, ``prune``) and ``evaluate``, with the same argument order
everywhere (``data_or_model, cfg, *, device=None, ckpt_dir=None, progress=True``), plus the paper's
step functions for the notebooks. A method package imports only from
:mod:`obstructlib.primitives` and the layers below it (``engine``, ``metrics``, ``models``,
``data``), never from another method package; ``tests/test_layers.py`` enforces this.
"""

__all__: list[str] = []
