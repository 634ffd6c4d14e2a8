"""The parts of bench/load.py: test images and checks, attacks, the report, the driver."""
