"""Analysis of trained backbones: metrics, calibration, projections, SOM (stored in the experiment)."""
