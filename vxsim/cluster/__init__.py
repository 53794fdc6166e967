"""Running sweeps on clusters: batch-job scripts for a scheduler (Slurm)."""
