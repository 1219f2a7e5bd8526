"""watch's machinery: the loop, the diff against the baseline, the history store, the alert outbox.

Nothing is imported here: the history store pulls in SQLAlchemy (~200 ms), which `watch` and `history`
need and no other command should pay for.
"""
