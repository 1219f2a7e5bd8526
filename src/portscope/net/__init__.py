"""Reaching ports over the network: targets, one check, the scan engine."""
