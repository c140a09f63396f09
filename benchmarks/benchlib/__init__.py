"""The benchmark harness behind ``benchmarks/run.py`` (see ``docs/performance.md``).

Modules: ``scenarios`` (what is measured), ``repositories`` and ``artifacts`` (the models),
``servers`` (starting and stopping what is measured), ``drivers`` and ``loaders`` (checking the
answer, then the load), ``procstats`` (CPU and memory from /proc), ``results`` and ``report``
(figures, tables, chart), ``machine`` and ``docs``. ``bare.py``, ``pyload.py`` and
``artifacts.py`` also run as scripts in their own processes.
"""
