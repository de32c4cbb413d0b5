"""Studies behind the optimiser suites: experiments that use the library (``marl.imitation``, ``optim``)
and are not part of it. ``marl bench optim`` runs them; docs/design/benchmarks.md describes them.
"""
