"""The baseline file and the rules over a snapshot: what should listen here, and what differs now.

Below cli/ and monitor/ (watch diffs against the baseline), above inventory/ and registry/. Nothing is
imported here, so that a command pays only for the module it uses.
"""
