"""Config-driven EM studies: validated YAML, cached stages, resume, report."""
