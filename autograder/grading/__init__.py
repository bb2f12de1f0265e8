"""Grade nbgrader submissions by the cluster state each student made, a namespace each."""

UNISOLATED_FLAG = "--without-isolation-students-can-read-cluster-credentials"
