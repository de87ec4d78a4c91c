"""What a suite asks for: the suite file, its axes, equal-budget tuning and the design that expands it
into cells, with the fingerprint of the code each cell runs."""
