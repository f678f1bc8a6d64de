"""pipeline: what `make reproduce` runs (plan), runs it (reproduce: Snakemake or the built-in driver) and one notebook
step (execution). It sits above study, whose experiments the notebooks call."""
