"""The troubleshooting engine: the seeds' "it doesn't connect" checklist run in order, stopping at the
cause, with the evidence and the next steps (engine.py); port conflicts (bind.py); the local firewall
(firewall.py). Core functions return model.Diagnosis; cli/ renders it."""
