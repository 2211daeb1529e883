"""Planning: a job and a target become a frozen `Plan`, all SQL rendered, without I/O."""
