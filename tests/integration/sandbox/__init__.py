"""The harness's sandbox over real HTTP: its contract, faults, lies and control API."""
