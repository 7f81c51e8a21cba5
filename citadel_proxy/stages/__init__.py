"""Pipeline stages, one module each; `registry.STAGES` names them for the YAML files."""
