"""opsctl: the operators' command line for the ML worker."""
