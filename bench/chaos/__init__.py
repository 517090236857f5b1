"""The chaos suite (issue 15): faults, load and hostile input, measured. See bench/chaos/run.py."""
