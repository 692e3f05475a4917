"""What a job is: the config schema (types, defaults, ranges) and the checks on a composed config."""
