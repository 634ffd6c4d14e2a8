"""The parts of bench/serve.py: results and their table, the in-process rows, the load generator."""
