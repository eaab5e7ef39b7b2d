"""Pure statistics on arrays: metrics with patient-bootstrap CIs, calibration, operating points,
subgroups, 2-D projections and the SOM fit. Imports nothing of covidviz but ``data`` and ``io``,
so every layer above (training, ood, cam, analysis, inference, views) may use it."""
