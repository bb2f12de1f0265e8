"""The ways to get a cluster (kind, the practice cluster, an existing context) and the choice between them."""
