"""The network test bed: a namespace "host" with real daemons and a firewall (see bed.py)."""
