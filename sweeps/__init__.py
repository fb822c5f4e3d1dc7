"""Sweeps of federated experiments on Ray Tune (the only package that imports ``ray.tune``).

- :mod:`sweeps.spec`: sweep YAML -> a checked :class:`~sweeps.spec.SweepSpec`; presets.
- :mod:`sweeps.trials`: a spec -> validated trials (variants x settings x grid x seeds), their ids and columns.
- :mod:`sweeps.tune_runner`: the Tune trainable (one trial = one ``orchestrator.run.Experiment``) and the
  per-trial placement groups.
- :mod:`sweeps.results`: ``results.parquet`` / ``trials.parquet`` from the trial folders.
- :mod:`sweeps.run`: the command line, ``python -m sweeps.run --preset quick --out DIR``.
"""
