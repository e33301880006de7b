"""The soak test's parts: processes, load, faults, oracle and report (see ``soak.py``)."""
