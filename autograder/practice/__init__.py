"""The practice cluster's own machinery: the image catalog, the traffic router and its supervision."""
