"""Offline build tooling no notebook imports: Go builds, the python base image, the kind node image, the hosted image."""
