"""The read-only web dashboard: served by the oracle at /ui (oracle/dashboard.py) and on its own by
`tributa dashboard`. data.py is the one data layer both use; sources.py is what differs."""
