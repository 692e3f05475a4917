"""The console face: the `dfarun` Hydra app, the console scripts' guard, Slurm, bench, crosscheck."""
