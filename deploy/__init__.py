"""deploy/: compression (JLCM and baselines), C and ONNX export, host / Cortex-M4 verification, reports.

Entry point: deploy.export.export_policy (behind `marl export`)."""
