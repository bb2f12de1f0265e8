"""What every room shares.

The Kubernetes toolkit, kubeconfigs, ports, binaries, the provider contract, waiting, errors,
processes and isolation. It imports no other room.
"""
