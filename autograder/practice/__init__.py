"""The practice cluster's own machinery: the image catalog, the traffic router, its supervision."""
