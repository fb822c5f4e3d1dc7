"""Sweeps of federated experiments on Ray Tune (the only package that imports ``ray.tune``).

- :mod:`sweeps.spec`: sweep YAML -> validated trials (variants x settings x grid x seeds); presets.
- :mod:`sweeps.tune_runner`: the Tune trainable (one trial = one ``orchestrator.run.Experiment``) and the
  per-trial placement groups.
- :mod:`sweeps.results`: ``results.parquet`` / ``trials.parquet`` from the trial folders.
- :mod:`sweeps.run`: the command line, ``python -m sweeps.run --preset quick --out DIR``.
"""
