"""Grade nbgrader submissions by the cluster state each student produced, one namespace per submission."""

UNISOLATED_FLAG = "--without-isolation-students-can-read-cluster-credentials"
