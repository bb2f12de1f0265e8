"""Grade nbgrader submissions by the cluster state each student produced, one namespace per submission."""
