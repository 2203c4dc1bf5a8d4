"""Entry points: purld-train, purld-eval, purld-anchors, purld-compare (Hydra apps on the same config tree)."""

from omegaconf import OmegaConf

from purld.cli.resume import hydra_output_subdir, hydra_run_dir

# Used by hydra.run.dir / hydra.output_subdir in conf/config.yaml; registered on import, before Hydra composes.
OmegaConf.register_new_resolver("purld_run_dir", hydra_run_dir, replace=True)
OmegaConf.register_new_resolver("purld_output_subdir", hydra_output_subdir, replace=True)
