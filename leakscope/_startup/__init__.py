"""Holds the start-up hook of `leakscope run` (sitecustomize.py); nothing to import."""
