"""What every room shares: the Kubernetes toolkit, kubeconfigs, ports, binaries, the provider contract,
waiting, errors, processes and isolation. It imports no other room."""
