"""Platforms that run the services: a real OSCAR cluster and the embedded local one."""
