"""The cluster's network: topology graphs and presets, routes, placement of mesh axes, collectives,
a plan's communication (`CommModel`), interconnect what-ifs and bandwidth/latency units."""
