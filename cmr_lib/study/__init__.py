"""study: the experiments the notebooks call (stylizers, runs, ablation, quality, rebuild) and cmr-predict."""
