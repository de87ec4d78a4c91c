"""Running a design: the session, local worker processes, leases, tuning studies and selection, and Ray."""
