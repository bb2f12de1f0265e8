"""The lesson's Kubernetes YAML; installed as the package autograder.manifests (see pyproject.toml)."""
