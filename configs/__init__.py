"""Shipped experiment configs (YAML). Installed as the data package ``marl.configs``; see marl/config.py."""
