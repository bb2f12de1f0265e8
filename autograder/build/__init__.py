"""Offline build tooling no notebook imports: Go builds, base, kind node and hosted images."""
