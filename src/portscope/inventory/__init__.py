"""This host's sockets and the processes that own them.

Linux: netlink sock_diag (what `ss` uses), falling back to /proc/net/*; owners from one pass over
/proc/*/fd. Elsewhere: psutil.
"""
